"""The transactional outbox: a message commits with the change it announces; a relay publishes it.

A crash between the commit and the publish loses nothing: the row stays until a relay (in
any process, several at once) has had the broker confirm it. Claims are leases, so a relay
that dies mid-batch only delays its rows. Consumers are idempotent, so the rare duplicate
(a relay dying after the confirm, before the delete) is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from alchemist.db.engine import run_in_transaction
from alchemist.db.models import OutboxMessage
from alchemist.messaging.base import Broker, PublishError
from alchemist.telemetry import Telemetry

logger = logging.getLogger(__name__)


def now_utc() -> datetime:
    """The relay's clock (tests hand in their own)."""
    return datetime.now(timezone.utc)


def add(session: Session, queue: str, body: dict[str, Any], message_id: str, *, delay: float = 0.0) -> None:
    """Queue a message in the caller's transaction; it is published after the commit."""
    moment = now_utc()
    session.add(
        OutboxMessage(
            queue=queue,
            message_id=message_id,
            body=json.dumps(body),
            available_at=moment + timedelta(seconds=delay),
            created_at=moment,
        )
    )


@dataclass(frozen=True)
class Pending:
    """A claimed message, detached from its session."""

    id: int
    queue: str
    message_id: str
    body: dict[str, Any]


def claim(session: Session, *, now: datetime, lease: float, limit: int) -> list[Pending]:
    """Lease up to `limit` due messages to this caller (no other relay gets them meanwhile)."""
    free = or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now)
    due = select(OutboxMessage.id).where(OutboxMessage.available_at <= now, free)
    ids = list(session.scalars(due.order_by(OutboxMessage.id).limit(limit)))
    if not ids:
        return []
    token = uuid.uuid4().hex
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), free)
        .values(claimed_by=token, claimed_until=now + timedelta(seconds=lease))
    )
    mine = session.scalars(select(OutboxMessage).where(OutboxMessage.claimed_by == token))
    return [Pending(row.id, row.queue, row.message_id, json.loads(row.body)) for row in mine]


def release(session: Session, ids: list[int], until: datetime) -> None:
    """Shorten this relay's claim on messages it could not publish, so a retry comes soon."""
    if ids:
        session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(claimed_until=until))


def remove(session: Session, ids: list[int]) -> None:
    """Forget messages the broker has confirmed."""
    if ids:
        session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(ids)))


def pending_count(session: Session) -> int:
    """Messages not yet published (a metric, and the tests' way to wait for quiet)."""
    return int(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


@dataclass
class OutboxRelay:
    """Publishes due outbox messages: at once when kicked after a commit, else every `interval`."""

    sessions: sessionmaker[Session]
    broker: Broker
    interval: float = 1.0
    lease: float = 30.0
    batch: int = 100
    clock: Callable[[], datetime] = now_utc
    telemetry: Telemetry | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        """Publish soon: something was just committed."""
        self._wake.set()

    async def run_once(self) -> int:
        """Publish one batch; how many were confirmed."""
        pending = await run_in_transaction(
            self.sessions, claim, now=self.clock(), lease=self.lease, limit=self.batch
        )
        sent: list[int] = []
        for message in pending:
            try:
                await self.broker.publish(message.queue, message.body, message_id=message.message_id)
            except PublishError as exc:
                logger.warning("outbox: could not publish %s yet: %s", message.message_id, exc)
                unsent = [m.id for m in pending if m.id not in sent]
                retry_at = self.clock() + timedelta(seconds=self.interval)
                with contextlib.suppress(Exception):  # else the lease runs out and the same happens later
                    await run_in_transaction(self.sessions, release, unsent, retry_at)
                break
            sent.append(message.id)
        if sent:
            await run_in_transaction(self.sessions, remove, sent)
            if self.telemetry is not None:
                self.telemetry.outbox_published.inc(len(sent))
        return len(sent)

    async def run(self) -> None:
        """Relay until stopped; survives database and broker outages."""
        while True:
            last = self._stopping  # asked to stop before this pass began: it is the final one
            self._wake.clear()
            try:
                while await self.run_once() >= self.batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage: keep going, the rows wait in the database
                logger.warning("outbox relay pass failed: %s", exc)
            if last:
                return
            if self._stopping:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    def start(self) -> None:
        """Run in the background of this event loop."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self, flush_seconds: float = 10.0) -> None:
        """Finish the pass in hand and one more, then stop; what is left waits for the next relay.

        Not a plain cancel: a pass cancelled mid-publish would hold its claims for a lease.
        """
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), flush_seconds)
        except asyncio.TimeoutError:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None
