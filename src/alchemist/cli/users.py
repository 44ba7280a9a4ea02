"""`alchemist users add|list|remove|passwd`: user administration against the service's database."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from alchemist.auth.passwords import PasswordVault
from alchemist.auth.users import UserError, add_user, canonical_email, list_users, remove_user, set_password
from alchemist.config import Settings
from alchemist.db.engine import build_engine, transaction
from alchemist.db.migrate import upgrade


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `users` and its subcommands."""
    users = commands.add_parser("users", help="add, list or remove users, or set a password")
    verbs = users.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="add a user (password from a prompt or stdin)")
    add.add_argument("email")
    add.add_argument("--admin", action="store_true", help="may see every user's jobs")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(run=run_add)
    verbs.add_parser("list", help="list users").set_defaults(run=run_list)
    remove = verbs.add_parser("remove", help="remove a user")
    remove.add_argument("email")
    remove.set_defaults(run=run_remove)
    passwd = verbs.add_parser("passwd", help="set a user's password (a forgotten one, say)")
    passwd.add_argument("email")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(run=run_passwd)


@contextmanager
def _session(settings: Settings | None = None) -> Iterator[Session]:
    settings = settings or Settings()
    engine = build_engine(settings.database_url)
    try:
        if settings.embedded or settings.ALCHEMIST_MIGRATE_ON_START:
            upgrade(engine)
        with transaction(sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise UserError("passwords do not match")
    return first


def run_add(args: argparse.Namespace) -> int:
    """Add one user."""
    try:
        password = _read_password(args.password_stdin)
        settings = Settings()
        with _session(settings) as session:
            vault = PasswordVault.from_settings(settings)  # the ARGON2_* parameters auth uses
            user = add_user(session, vault, args.email, password, admin=args.admin)
            email, admin = user.email, user.is_admin
    except UserError as exc:
        print(f"alchemist users add: {exc}", file=sys.stderr)
        return 1
    print(f"added {email}{' (admin)' if admin else ''}")
    return 0


def run_list(_args: argparse.Namespace) -> int:
    """Print every user, one a line."""
    with _session() as session:
        for user in list_users(session):
            role = "admin" if user.is_admin else "user"
            print(f"{user.email}\t{role}\t{user.created_at:%Y-%m-%d %H:%M}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Remove one user; their tokens stop working within REVOCATION_CACHE_SECONDS."""
    try:
        with _session() as session:
            remove_user(session, args.email)
    except UserError as exc:
        print(f"alchemist users remove: {exc}", file=sys.stderr)
        return 1
    print(f"removed {args.email}")
    return 0


def run_passwd(args: argparse.Namespace) -> int:
    """Set one user's password; the tokens they had stop working within REVOCATION_CACHE_SECONDS."""
    try:
        password = _read_password(args.password_stdin)
        settings = Settings()
        with _session(settings) as session:
            set_password(session, PasswordVault.from_settings(settings), args.email, password)
    except UserError as exc:
        print(f"alchemist users passwd: {exc}", file=sys.stderr)
        return 1
    print(f"password set for {canonical_email(args.email)}")
    return 0
