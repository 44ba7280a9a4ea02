"""User records: add, find, list, remove, set a password. Callers own the transaction."""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alchemist.auth.passwords import PasswordVault
from alchemist.db.models import User

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 255
MIN_PASSWORD_LENGTH = 8
# argon2 accepts any length; a bound keeps one request from hashing megabytes.
MAX_PASSWORD_LENGTH = 1024


class UserError(Exception):
    """A user cannot be added, changed or removed; the message says why."""


class UnknownUserError(UserError):
    """There is no user with this email."""


class UserExistsError(UserError):
    """A user with this email already exists."""


def canonical_email(email: str) -> str:
    """The account key: Unicode NFKC, trimmed, lower-cased; stored so and compared byte for byte.

    NFKC makes full-width `ann@` and `ann@` one account; accents stay (`víctim@` is not
    `victim@`). NFKC runs again after lower-casing, which can leave a string unnormalised.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).strip().lower())


def check_password(password: str) -> None:
    """Raises UserError when the password is too short or too long."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


def add_user(
    session: Session, vault: PasswordVault, email: str, password: str, *, admin: bool = False
) -> User:
    """Create a user with a hashed password; raises UserError on a bad email or password."""
    email = canonical_email(email)
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.match(email):
        raise UserError(f"{email!r} is not an email address")
    check_password(password)
    if find_user(session, email) is not None:
        raise UserExistsError(f"user {email} already exists")
    user = User(email=email, password_hash=vault.hash(password), is_admin=admin)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # added by someone else since find_user looked
        raise UserExistsError(f"user {email} already exists") from exc
    return user


def find_user(session: Session, email: str) -> User | None:
    """The user with this email (in any spelling with the same canonical form), if any."""
    return session.scalar(select(User).where(User.email == canonical_email(email)))


def list_users(session: Session) -> list[User]:
    """All users, oldest first."""
    return list(session.scalars(select(User).order_by(User.id)))


def set_password(session: Session, vault: PasswordVault, email: str, password: str) -> None:
    """Replace a user's password and revoke their tokens.

    Raises UserError on a bad password, UnknownUserError without the user.
    """
    check_password(password)
    user = find_user(session, email)
    if user is None:
        raise UnknownUserError(f"no user {canonical_email(email)}")
    password_hash = vault.hash(password)
    # Every token issued before carries the old version: the gateway and /validate refuse them.
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(password_hash=password_hash, token_version=User.token_version + 1)
    )


def remove_user(session: Session, email: str, *, keep_an_admin: bool = False) -> None:
    """Delete a user (their tokens die with the record); raises UnknownUserError when there is none.

    With keep_an_admin, refuses (UserError) to delete the last admin, even when two admins remove each other.
    """
    email = canonical_email(email)
    if keep_an_admin:
        # A no-op UPDATE locks the admin rows (MariaDB) or the database (SQLite) before anything is
        # read, so concurrent removals run one after the other; its rowcount is the matched rows.
        touched = session.execute(update(User).where(User.is_admin.is_(True)).values(is_admin=True))
        admins: int = touched.rowcount  # type: ignore[attr-defined]
        target = find_user(session, email)
        if target is not None and target.is_admin and admins <= 1:
            raise UserError(f"{email} is the last admin; add another admin first")
    result = session.execute(delete(User).where(User.email == email))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise UnknownUserError(f"no user {email}")


def renew_hash(session: Session, user_id: int, old_hash: str, new_hash: str) -> None:
    """Store a hash made with today's parameters, unless the password changed meanwhile."""
    session.execute(
        update(User).where(User.id == user_id, User.password_hash == old_hash).values(password_hash=new_hash)
    )
