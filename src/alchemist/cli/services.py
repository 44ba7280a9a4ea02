"""Subcommands that run a service in the foreground."""

from __future__ import annotations

import argparse

import uvicorn

from alchemist.config import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the service subcommands."""
    auth = commands.add_parser("auth", help="run the auth service (login, validate)")
    auth.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    auth.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    auth.set_defaults(run=run_auth)


def run_auth(args: argparse.Namespace) -> int:
    """Serve the auth API until interrupted."""
    from alchemist.auth.app import create_app

    app = create_app(Settings())
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
