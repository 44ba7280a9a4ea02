"""The schema: tables shared by the services through the database."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Account keys compare byte for byte: MySQL's default collations would match `víctim@` to
# `victim@` (accents) and `ANN@` to `ann@`; SQLite already compares strings as binary.
AccountKey = String(255).with_variant(mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql")

# Microseconds on MySQL too (its plain DATETIME keeps whole seconds): leases, heartbeats and
# the live list compare moments less than a second apart.
Moment = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql")


def utcnow() -> datetime:
    """Now, in UTC, as stored in every timestamp column."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class User(Base):
    """A person who may log in; `email` is the seeds' username."""

    __tablename__ = "user"
    # Ids are never reused (SQLite would hand a deleted newest id out again): a token names its user by id.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(AccountKey, unique=True, nullable=False)  # canonical (users.py)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Carried in each token as `ver`; bumping it (password reset) revokes every token issued before.
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")


class LoginFailure(Base):
    """Failed logins in the current window of one limiter key (account + address, or address)."""

    __tablename__ = "login_failure"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of scope, account, address
    account: Mapped[str | None] = mapped_column(AccountKey, nullable=True, index=True)
    address: Mapped[str] = mapped_column(String(64), nullable=False)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    window_start: Mapped[datetime] = mapped_column(Moment, nullable=False, index=True)


class RevokedToken(Base):
    """A signed-out token's id, denied until the token would have expired anyway."""

    __tablename__ = "revoked_token"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(Moment, nullable=False, index=True)


class JobStatus:
    """The states of a job; a job only moves forward."""

    QUEUED = "queued"
    CONVERTING = "converting"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"  # done, and its output was deleted after RETENTION_DAYS
    ALL = (QUEUED, CONVERTING, DONE, FAILED, EXPIRED)
    UNFINISHED = (QUEUED, CONVERTING)
    FINISHED = (DONE, FAILED)


class Job(Base):
    """One upload and its conversion."""

    __tablename__ = "job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(AccountKey, index=True, nullable=False)  # a user's email
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(String(16), index=True, nullable=False)
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    video_fid: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None once deleted
    video_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    mp3_fid: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    pending_mp3_fid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    warning: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    conversion_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, index=True
    )
    heartbeat_at: Mapped[datetime | None] = mapped_column(Moment, nullable=True)
    notify_lease_until: Mapped[datetime | None] = mapped_column(Moment, nullable=True)
    notify_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(Moment, nullable=True, index=True)
    output_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class OutboxMessage(Base):
    """A message committed with the change it announces; a relay publishes it, then deletes it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(255), nullable=False)
    message_id: Mapped[str] = mapped_column(String(128), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    available_at: Mapped[datetime] = mapped_column(Moment, nullable=False, index=True)
    claimed_until: Mapped[datetime | None] = mapped_column(Moment, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(Moment, default=utcnow)
