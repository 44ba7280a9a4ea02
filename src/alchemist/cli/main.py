"""Entry point of the `alchemist` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from alchemist import __version__
from alchemist.cli import convert, database, services, storage, up, users
from alchemist.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subcommand per verb."""
    parser = argparse.ArgumentParser(prog="alchemist", description="Audio Alchemist: turn videos into MP3s.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up.register(commands)
    services.register(commands)
    users.register(commands)
    database.register(commands)
    convert.register(commands)
    storage.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"alchemist: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
