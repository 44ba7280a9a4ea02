"""`alchemist migrate`: bring the database schema up to date."""

from __future__ import annotations

import argparse

from alchemist.config import Settings
from alchemist.db.engine import build_engine
from alchemist.db.migrate import upgrade


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the migrate subcommand."""
    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=run_migrate)


def run_migrate(_args: argparse.Namespace) -> int:
    """Apply pending migrations to the configured database."""
    settings = Settings()
    engine = build_engine(settings.database_url)
    try:
        revision = upgrade(engine)
    finally:
        engine.dispose()
    print(f"database {settings.database_url.render_as_string()} at revision {revision}")
    return 0
