"""Shared by the reliability tests: a clock the test moves, backends on the test's database."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from alchemist.config import Settings
from alchemist.db.engine import transaction
from alchemist.db.models import Job, OutboxMessage, User
from alchemist.gateway.app import create_app
from alchemist.messaging.memory import InMemoryBroker
from alchemist.tokens import TokenSigner
from alchemist.wiring import Backends, build_backends
from tests.conftest import serve_in_thread
from tests.integration.messaging.conftest import rabbitmq_url  # noqa: F401 (a fixture, shared)


class Clock:
    """Real time plus what the test added, or pinned to a moment: leases end when the test says.

    Unpinned it never runs behind the wall clock, so rows stamped with the real time (an
    outbox message, a job's updated_at) are never "in the future" to whoever reads it.
    Pinned, real time stops mattering: nothing becomes due because the test ran slowly.
    """

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.pinned: datetime | None = None

    def __call__(self) -> datetime:
        return (self.pinned or datetime.now(timezone.utc)) + self.offset

    def pin(self, moment: datetime | None = None) -> datetime:
        """Stop at `moment` (default: now); returns it."""
        self.offset = timedelta(0)
        self.pinned = moment or datetime.now(timezone.utc)
        return self.pinned

    def advance(self, seconds: float) -> None:
        """Move on by this many seconds."""
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    """A clock that moves only as far as the test moves it (on top of real time)."""
    return Clock()


def configured(settings: Settings, **changes: object) -> Settings:
    """The settings with these changes, validated as if read from the environment."""
    return Settings(**{**settings.model_dump(), **changes})


@pytest.fixture
async def backends(settings: Settings) -> AsyncIterator[Backends]:
    """The test's database (migrated), FileStores in its temp dir and an in-process broker."""
    built = await build_backends(settings, name="test", broker=InMemoryBroker(settings.MAX_ATTEMPTS))
    try:
        yield built
    finally:
        await built.close()


@dataclass(frozen=True)
class Queued:
    """An outbox row as the test sees it."""

    queue: str
    message_id: str
    body: dict[str, Any]
    available_at: datetime
    created_at: datetime
    claimed_until: datetime | None


def outbox_rows(sessions: sessionmaker[Session], queue: str | None = None) -> list[Queued]:
    """Messages waiting in the outbox (of one queue), oldest first."""
    query = select(OutboxMessage).order_by(OutboxMessage.id)
    if queue is not None:
        query = query.where(OutboxMessage.queue == queue)
    with transaction(sessions) as session:
        return [
            Queued(
                row.queue,
                row.message_id,
                json.loads(row.body),
                utc(row.available_at),
                utc(row.created_at),
                utc(row.claimed_until) if row.claimed_until else None,
            )
            for row in session.scalars(query)
        ]


def utc(moment: datetime) -> datetime:
    """A stored moment with its UTC offset (SQLite hands them back naive)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def load_job(sessions: sessionmaker[Session], job_id: str) -> Job:
    """The job as stored now."""
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None, f"job {job_id} is gone"
        return job


async def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until check() is true (a bound on a hang, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[str]:
    """The gateway app on a loopback socket, on the test's database and storage; its base URL.

    It gets backends of its own (its relay publishes to a broker of its own, in its thread),
    so it never takes the outbox rows or queues a test is watching.
    """
    own = await build_backends(settings, name="gateway", broker=InMemoryBroker(settings.MAX_ATTEMPTS))
    try:
        with serve_in_thread(create_app(settings, own)) as url:
            yield url
    finally:
        await own.close()


def bearer(
    settings: Settings, sessions: sessionmaker[Session], username: str, admin: bool = False
) -> dict[str, str]:
    """The Authorization header of a token auth would issue to this user (added if new)."""
    with transaction(sessions) as session:
        user = session.scalar(select(User).where(User.email == username))
        if user is None:
            # No password: nobody logs in as this user, the test hands its token over directly.
            user = User(email=username, password_hash="!", is_admin=admin)
            session.add(user)
            session.flush()
        user_id, version = user.id, user.token_version
    signer = TokenSigner(secret=settings.jwt_secret(), issuer=settings.JWT_ISSUER)
    token = signer.issue(user_id=user_id, username=username, admin=admin, version=version)
    return {"Authorization": f"Bearer {token}"}
