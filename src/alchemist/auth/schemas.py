"""Request and response models of the auth service's user administration."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from alchemist.auth.users import MAX_EMAIL_LENGTH, MAX_PASSWORD_LENGTH
from alchemist.db.models import User


def _as_utc(moment: datetime) -> datetime:
    # SQLite and MariaDB hand back naive datetimes; every stored one is UTC.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# isoformat() writes "+00:00" where Pydantic's own JSON would write "Z"; the API promises an offset.
UtcDateTime = Annotated[
    datetime, AfterValidator(_as_utc), PlainSerializer(datetime.isoformat, return_type=str, when_used="json")
]


class ErrorOut(BaseModel):
    """Every error: one readable sentence."""

    detail: str = Field(examples=["no user ann@example.com"])


class UserOut(BaseModel):
    """A person who may log in."""

    email: str
    admin: bool
    created_at: UtcDateTime = Field(examples=["2026-11-23T19:20:00+00:00"])

    @classmethod
    def of(cls, user: User) -> UserOut:
        """The public view of a user record (never its password hash)."""
        return cls(email=user.email, admin=user.is_admin, created_at=user.created_at)


class UserList(BaseModel):
    """Every user, oldest first."""

    users: list[UserOut]


class NewUser(BaseModel):
    """An account to create; the password's minimum length is checked with the other rules."""

    # strict: "admin": "yes" or 1 is a mistake to report, not a value to guess at.
    model_config = ConfigDict(extra="forbid", strict=True)

    email: str = Field(max_length=MAX_EMAIL_LENGTH, examples=["ann@example.com"])
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    admin: bool = False


class NewPassword(BaseModel):
    """A password to set."""

    model_config = ConfigDict(extra="forbid", strict=True)

    password: str = Field(max_length=MAX_PASSWORD_LENGTH)
