"""The transactional outbox and its relay, on SQLite and MariaDB: nothing lost, nothing sent twice."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from alchemist import jobs, outbox
from alchemist.config import Settings
from alchemist.db.engine import transaction
from alchemist.db.models import Job
from alchemist.messaging.base import Delivery, Handler, PublishError, Subscription
from alchemist.messaging.memory import InMemoryBroker
from alchemist.messaging.messages import VideoUploaded
from alchemist.messaging.rabbitmq import RabbitMQBroker
from alchemist.outbox import OutboxRelay
from alchemist.wiring import Backends
from tests.integration.conftest import Clock, eventually, outbox_rows

QUEUE = "video"


class RollbackError(Exception):
    """Raised inside a transaction to roll it back."""


class FlakyBroker:
    """The in-process broker behind a link that refuses `failures` publishes after `after` went through.

    A real broker and a real failure mode (the broker said no), not a stand-in for our code.
    """

    def __init__(self, failures: int, after: int = 0) -> None:
        self.inner = InMemoryBroker()
        self.failures = failures
        self.after = after
        self.refused = 0
        self.published: list[str] = []

    async def connect(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        """Always reachable."""

    async def publish(self, queue: str, body: dict[str, Any], *, message_id: str) -> None:
        """Refuse while failures remain, then publish for real."""
        if len(self.published) >= self.after and self.refused < self.failures:
            self.refused += 1
            raise PublishError("the broker refused the message (test outage)")
        await self.inner.publish(queue, body, message_id=message_id)
        self.published.append(message_id)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 1) -> Subscription:
        """Consume from the inner broker."""
        return await self.inner.consume(queue, handler, prefetch=prefetch)

    async def consume_dead(self, queue: str, handler: Handler, *, prefetch: int = 1) -> Subscription:
        """Consume dead letters from the inner broker."""
        return await self.inner.consume_dead(queue, handler, prefetch=prefetch)

    async def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        """The inner broker's dead letters."""
        return await self.inner.dead_letters(queue)


def memory(backends: Backends) -> InMemoryBroker:
    """The test backends' broker (always the in-process one)."""
    assert isinstance(backends.broker, InMemoryBroker)
    return backends.broker


def add_messages(backends: Backends, count: int, prefix: str = "m") -> list[str]:
    """Commit `count` messages; their ids in order."""
    ids = [f"{prefix}{n}" for n in range(count)]
    with transaction(backends.sessions) as session:
        for n, message_id in enumerate(ids):
            outbox.add(session, QUEUE, {"n": n}, message_id)
    return ids


async def take_all(broker: InMemoryBroker, queue: str) -> list[Delivery]:
    """Every message waiting in an in-process queue, consumed."""
    expected = broker.depth(queue)
    got: list[Delivery] = []

    async def record(delivery: Delivery) -> None:
        got.append(delivery)

    subscription = await broker.consume(queue, record, prefetch=100)
    await eventually(lambda: len(got) >= expected)
    await subscription.cancel()
    return got


async def test_a_message_added_in_a_rolled_back_transaction_is_never_published(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    with pytest.raises(RollbackError), transaction(backends.sessions) as session:
        job = jobs.create_job(
            session, owner="ann@example.com", filename="a.mp4", video_fid="v" * 32, video_bytes=1
        )
        jobs.queue_conversion(session, settings, job)
        raise RollbackError
    relay = OutboxRelay(backends.sessions, backends.broker, clock=clock)
    clock.advance(3600)  # whatever was due would be by now
    assert await relay.run_once() == 0
    assert memory(backends).depth(QUEUE) == 0
    assert outbox_rows(backends.sessions) == []
    with transaction(backends.sessions) as session:
        assert session.query(Job).count() == 0  # the change and its message went together


async def test_a_committed_message_is_published_once_then_forgotten(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    with transaction(backends.sessions) as session:
        job = jobs.create_job(
            session, owner="ann@example.com", filename="a.mp4", video_fid="v" * 32, video_bytes=1
        )
        jobs.queue_conversion(session, settings, job)
    relay = OutboxRelay(backends.sessions, backends.broker, clock=clock)
    assert await relay.run_once() == 1
    assert outbox_rows(backends.sessions) == []
    assert await relay.run_once() == 0  # gone from the table: never published again
    [delivery] = await take_all(memory(backends), QUEUE)
    assert delivery.message_id == f"{job.id}.video"
    expected = VideoUploaded(job_id=job.id, video_fid="v" * 32, username="ann@example.com")
    assert VideoUploaded.model_validate(delivery.body) == expected


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[tuple[RabbitMQBroker, str]]:
    """A RabbitMQ connection and a queue name nobody else uses (deleted afterwards)."""
    broker = RabbitMQBroker(rabbitmq_url, heartbeat=5, publish_timeout=10)
    await broker.connect()
    queue = f"test.{secrets.token_hex(4)}.outbox"
    try:
        yield broker, queue
    finally:
        await broker.delete(queue)
        await broker.close()


@pytest.mark.rabbitmq
async def test_the_relay_publishes_to_rabbitmq_with_confirms(
    backends: Backends, clock: Clock, rabbit: tuple[RabbitMQBroker, str]
) -> None:
    broker, queue = rabbit
    with transaction(backends.sessions) as session:
        outbox.add(session, queue, {"job_id": "j1"}, "j1.video")
        outbox.add(session, queue, {"job_id": "j2"}, "j2.video")
    relay = OutboxRelay(backends.sessions, broker, clock=clock)
    assert await relay.run_once() == 2
    assert outbox_rows(backends.sessions) == []
    got: list[Delivery] = []

    async def record(delivery: Delivery) -> None:
        got.append(delivery)

    subscription = await broker.consume(queue, record, prefetch=10)
    await eventually(lambda: len(got) == 2)
    await subscription.cancel()
    assert [(d.message_id, d.body) for d in got] == [
        ("j1.video", {"job_id": "j1"}),
        ("j2.video", {"job_id": "j2"}),
    ]


def test_relays_claiming_at_the_same_time_never_share_a_row(backends: Backends, clock: Clock) -> None:
    total, relays = 120, 4
    add_messages(backends, total)
    claimed: list[list[int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one_relay(barrier: threading.Barrier) -> None:
        try:
            barrier.wait()
            with transaction(backends.sessions) as session:
                mine = outbox.claim(session, now=clock(), lease=30, limit=40)
            with lock:
                claimed.append([message.id for message in mine])
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    rounds = 0
    while sum(len(ids) for ids in claimed) < total:
        rounds += 1
        assert rounds <= 20, f"claims stopped making progress: {claimed}"
        barrier = threading.Barrier(relays)
        threads = [threading.Thread(target=one_relay, args=(barrier,)) for _ in range(relays)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
    every = [row_id for ids in claimed for row_id in ids]
    assert len(every) == len(set(every)) == total  # each row leased to exactly one relay


async def test_a_relay_that_died_after_claiming_holds_the_row_only_for_its_lease(
    backends: Backends, clock: Clock
) -> None:
    [message_id] = add_messages(backends, 1)
    clock.pin()  # from here on only the test moves time
    relay = OutboxRelay(backends.sessions, backends.broker, lease=30, clock=clock)
    with transaction(backends.sessions) as session:  # the relay that died: claimed, never published
        assert len(outbox.claim(session, now=clock(), lease=30, limit=100)) == 1
    assert await relay.run_once() == 0
    clock.advance(29)
    assert await relay.run_once() == 0  # still its lease
    assert memory(backends).depth(QUEUE) == 0
    clock.advance(2)
    assert await relay.run_once() == 1
    assert outbox_rows(backends.sessions) == []
    assert [d.message_id for d in await take_all(memory(backends), QUEUE)] == [message_id]


async def test_a_refused_publish_leaves_the_row_for_a_later_pass(backends: Backends, clock: Clock) -> None:
    ids = add_messages(backends, 3)
    clock.pin()
    flaky = FlakyBroker(failures=1)
    relay = OutboxRelay(backends.sessions, flaky, lease=30, clock=clock)
    assert await relay.run_once() == 0
    assert flaky.refused == 1
    assert [row.message_id for row in outbox_rows(backends.sessions)] == ids  # nothing lost
    clock.advance(31)  # the failed pass's claims run out (its lease is how it retries)
    assert await relay.run_once() == 3
    assert flaky.published == ids  # each exactly once, in order
    assert outbox_rows(backends.sessions) == []
    assert [d.message_id for d in await take_all(flaky.inner, QUEUE)] == ids


async def test_a_refusal_mid_batch_keeps_what_was_confirmed_and_retries_the_rest(
    backends: Backends, clock: Clock
) -> None:
    ids = add_messages(backends, 3)
    clock.pin()
    flaky = FlakyBroker(failures=1, after=1)  # the first goes through, the second is refused
    relay = OutboxRelay(backends.sessions, flaky, lease=30, clock=clock)
    assert await relay.run_once() == 1
    assert [row.message_id for row in outbox_rows(backends.sessions)] == ids[1:]
    clock.advance(31)
    assert await relay.run_once() == 2
    assert flaky.published == ids  # the confirmed one was not sent again
    assert outbox_rows(backends.sessions) == []


async def test_stop_flushes_what_was_committed_and_kicked(backends: Backends) -> None:
    broker = memory(backends)
    relay = OutboxRelay(backends.sessions, broker, interval=3600)  # no periodic pass would save us
    [first] = add_messages(backends, 1, prefix="before")
    relay.start()
    await eventually(lambda: broker.depth(QUEUE) == 1)  # its first pass ran; now it waits, idle
    [second] = await asyncio.to_thread(add_messages, backends, 1, "late")
    relay.kick()
    await relay.stop()
    assert outbox_rows(backends.sessions) == []
    assert [d.message_id for d in await take_all(broker, QUEUE)] == [first, second]


async def test_stop_right_after_a_kick_still_publishes(backends: Backends) -> None:
    broker = memory(backends)
    relay = OutboxRelay(backends.sessions, broker, interval=3600)
    relay.start()
    ids = await asyncio.to_thread(add_messages, backends, 5)
    relay.kick()
    await relay.stop()
    assert outbox_rows(backends.sessions) == []
    assert sorted(d.message_id for d in await take_all(broker, QUEUE)) == sorted(ids)
