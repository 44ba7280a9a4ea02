"""User records: add, find, list, remove. Callers own the transaction."""

from __future__ import annotations

import re

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from alchemist.auth.passwords import PasswordVault
from alchemist.db.models import User

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8


class UserError(Exception):
    """A user cannot be added or removed; the message says why."""


def normalise_email(email: str) -> str:
    """Emails are stored and looked up trimmed and lower-cased."""
    return email.strip().lower()


def add_user(
    session: Session, vault: PasswordVault, email: str, password: str, *, admin: bool = False
) -> User:
    """Create a user with a hashed password; raises UserError on a bad email or password."""
    email = normalise_email(email)
    if len(email) > 255 or not EMAIL_PATTERN.match(email):
        raise UserError(f"{email!r} is not an email address")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if find_user(session, email) is not None:
        raise UserError(f"user {email} already exists")
    user = User(email=email, password_hash=vault.hash(password), is_admin=admin)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, email: str) -> User | None:
    """The user with this email, if any."""
    return session.scalar(select(User).where(User.email == normalise_email(email)))


def list_users(session: Session) -> list[User]:
    """All users, oldest first."""
    return list(session.scalars(select(User).order_by(User.id)))


def remove_user(session: Session, email: str) -> None:
    """Delete a user; raises UserError when there is none."""
    result = session.execute(delete(User).where(User.email == normalise_email(email)))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise UserError(f"no user {normalise_email(email)}")
