"""One contract, every Broker adapter."""

from __future__ import annotations

import asyncio

import pytest

from alchemist.messaging import rabbitmq
from alchemist.messaging.base import Broker, Delivery, PermanentFailure
from alchemist.messaging.memory import InMemoryBroker
from alchemist.messaging.rabbitmq import RabbitMQBroker

from .conftest import MAX_ATTEMPTS, eventually


async def test_published_message_is_handled_once_and_acked(broker: Broker, queue_name: str) -> None:
    seen: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)

    await broker.publish(queue_name, {"video_fid": "abc", "username": "ann"}, message_id="m1")
    subscription = await broker.consume(queue_name, handler)
    await eventually(lambda: len(seen) == 1)
    await asyncio.sleep(0.3)
    await subscription.cancel()
    assert len(seen) == 1
    assert seen[0].body == {"video_fid": "abc", "username": "ann"}
    assert (seen[0].message_id, seen[0].attempt, seen[0].queue) == ("m1", 1, queue_name)
    assert await broker.dead_letters(queue_name) == []
    # Acked: a new consumer finds nothing.
    again: list[Delivery] = []

    async def record(delivery: Delivery) -> None:
        again.append(delivery)

    second = await broker.consume(queue_name, record)
    await asyncio.sleep(0.5)
    await second.cancel()
    assert again == []


async def test_permanent_failure_goes_straight_to_the_dead_letters(broker: Broker, queue_name: str) -> None:
    calls: list[int] = []

    async def handler(delivery: Delivery) -> None:
        calls.append(delivery.attempt)
        raise PermanentFailure("no audio track")

    await broker.publish(queue_name, {"job": 1}, message_id="poison")
    subscription = await broker.consume(queue_name, handler)
    dead: list[dict[str, object]] = []

    async def collect() -> bool:
        dead.extend(await broker.dead_letters(queue_name))
        return bool(dead)

    for _ in range(100):
        if await collect():
            break
        await asyncio.sleep(0.1)
    await subscription.cancel()
    assert dead == [{"job": 1}]
    assert calls == [1]


async def test_transient_failures_are_retried_then_succeed(broker: Broker, queue_name: str) -> None:
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt < MAX_ATTEMPTS:
            raise ConnectionError("storage hiccup")

    await broker.publish(queue_name, {"job": 2}, message_id="flaky")
    subscription = await broker.consume(queue_name, handler)
    await eventually(lambda: len(attempts) == MAX_ATTEMPTS)
    await asyncio.sleep(0.5)
    await subscription.cancel()
    assert attempts == [1, 2, 3]
    assert await broker.dead_letters(queue_name) == []


async def test_a_message_that_always_fails_stops_after_the_last_attempt(
    broker: Broker, queue_name: str
) -> None:
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("always broken")

    await broker.publish(queue_name, {"job": 3}, message_id="doomed")
    subscription = await broker.consume(queue_name, handler)
    await eventually(lambda: len(attempts) >= MAX_ATTEMPTS)
    await asyncio.sleep(1.0)  # time for a wrong extra attempt to show up
    await subscription.cancel()
    assert attempts == [1, 2, 3]
    assert await broker.dead_letters(queue_name) == [{"job": 3}]


async def test_many_messages_each_arrive(broker: Broker, queue_name: str) -> None:
    got: list[int] = []

    async def handler(delivery: Delivery) -> None:
        got.append(int(delivery.body["n"]))

    for n in range(50):
        await broker.publish(queue_name, {"n": n}, message_id=f"n{n}")
    subscription = await broker.consume(queue_name, handler, prefetch=10)
    await eventually(lambda: len(got) >= 50)
    await subscription.cancel()
    assert sorted(got) == list(range(50))


@pytest.mark.parametrize("prefetch", [1, 2])
async def test_prefetch_bounds_the_work_in_hand(broker: Broker, queue_name: str, prefetch: int) -> None:
    running, peak, done = 0, 0, 0

    async def handler(delivery: Delivery) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)
        running -= 1
        done += 1

    for n in range(6):
        await broker.publish(queue_name, {"n": n}, message_id=f"p{n}")
    subscription = await broker.consume(queue_name, handler, prefetch=prefetch)
    await eventually(lambda: done == 6)
    await subscription.cancel()
    assert peak == prefetch


async def test_a_message_in_hand_when_the_consumer_stops_is_redelivered(
    broker: Broker, queue_name: str
) -> None:
    started = asyncio.Event()

    async def stuck(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(3600)

    await broker.publish(queue_name, {"job": 9}, message_id="in-hand")
    first = await broker.consume(queue_name, stuck)
    await asyncio.wait_for(started.wait(), 15)
    await first.cancel()
    seen: list[Delivery] = []

    async def record(delivery: Delivery) -> None:
        seen.append(delivery)

    second = await broker.consume(queue_name, record)
    await eventually(lambda: len(seen) == 1)
    await second.cancel()
    assert seen[0].body == {"job": 9}
    assert seen[0].attempt == 2


async def test_a_permanent_failure_reaches_the_dead_letter_handler_once(
    broker: Broker, queue_name: str
) -> None:
    dead: list[Delivery] = []

    async def on_dead(delivery: Delivery) -> None:
        dead.append(delivery)

    async def poison(delivery: Delivery) -> None:
        raise PermanentFailure("no audio track")

    dead_letters = await broker.consume_dead(queue_name, on_dead)
    work = await broker.consume(queue_name, poison)
    await broker.publish(queue_name, {"job": 4}, message_id="poison")
    await eventually(lambda: len(dead) == 1)
    await asyncio.sleep(0.5)  # time for a wrong second copy to show up
    await work.cancel()
    await dead_letters.cancel()
    assert [(d.body, d.message_id, d.queue) for d in dead] == [({"job": 4}, "poison", f"{queue_name}.dead")]
    assert await broker.dead_letters(queue_name) == []  # handed over, not left stored


async def test_dead_letters_from_before_the_dead_letter_handler_started_are_handed_over(
    broker: Broker, queue_name: str
) -> None:
    calls: list[int] = []

    async def poison(delivery: Delivery) -> None:
        calls.append(delivery.attempt)
        raise PermanentFailure("no audio track")

    work = await broker.consume(queue_name, poison)
    await broker.publish(queue_name, {"job": 6}, message_id="early")
    await eventually(lambda: len(calls) == 1)
    await work.cancel(grace=10)  # its verdict is settled before it stops
    dead: list[Delivery] = []

    async def on_dead(delivery: Delivery) -> None:
        dead.append(delivery)

    dead_letters = await broker.consume_dead(queue_name, on_dead)
    await eventually(lambda: len(dead) == 1)
    await asyncio.sleep(0.5)
    await dead_letters.cancel()
    assert [(d.body, d.message_id) for d in dead] == [({"job": 6}, "early")]


@pytest.mark.parametrize("failures", [1, MAX_ATTEMPTS + 1])
async def test_a_dead_letter_whose_handler_fails_is_handed_over_again(
    broker: Broker,
    queue_name: str,
    failures: int,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RabbitMQ pauses between tries of a failed dead letter; the test need not wait that out.
    monkeypatch.setattr(rabbitmq, "DEAD_RETRY_DELAY", 0.05)
    if isinstance(broker, InMemoryBroker):
        broker.dead_retry_delay = 0.05
    tries: list[dict[str, object]] = []

    async def on_dead(delivery: Delivery) -> None:
        tries.append(delivery.body)
        if len(tries) <= failures:
            raise ConnectionError("the database is away")

    async def poison(delivery: Delivery) -> None:
        raise PermanentFailure("no audio track")

    dead_letters = await broker.consume_dead(queue_name, on_dead)
    work = await broker.consume(queue_name, poison)
    await broker.publish(queue_name, {"job": 7}, message_id="retried")
    try:
        await eventually(lambda: len(tries) == failures + 1, timeout=5)
        await asyncio.sleep(0.5)  # handled: it must not come again
    finally:
        await work.cancel()
        await dead_letters.cancel()
    assert tries == [{"job": 7}] * (failures + 1)
    assert await broker.dead_letters(queue_name) == []


@pytest.mark.rabbitmq
async def test_a_message_past_the_delivery_limit_reaches_the_dead_letter_handler_once(
    rabbitmq_url: str, queue_name: str
) -> None:
    rabbit = RabbitMQBroker(rabbitmq_url, max_attempts=MAX_ATTEMPTS, heartbeat=5)
    await rabbit.connect()
    release = asyncio.Event()
    try:
        dead: list[Delivery] = []

        async def on_dead(delivery: Delivery) -> None:
            dead.append(delivery)

        dead_letters = await rabbit.consume_dead(queue_name, on_dead)
        await rabbit.publish(queue_name, {"job": 8}, message_id="crasher")
        attempts: list[int] = []
        while not dead:
            assert len(attempts) <= MAX_ATTEMPTS + 1, f"never dead-lettered: {attempts}"
            taken = asyncio.Event()

            async def crash(delivery: Delivery, taken: asyncio.Event = taken) -> None:
                attempts.append(delivery.attempt)
                taken.set()
                await release.wait()  # holds it unacked until its channel dies, as a killed converter

            work = await rabbit.consume(queue_name, crash)
            # Either a consumer gets it once more, or (past the limit) the dead-letter handler does.
            await eventually(lambda taken=taken: taken.is_set() or bool(dead))
            await work.cancel()  # the channel closes with the message unacked
        await asyncio.sleep(0.5)
        await dead_letters.cancel()
        assert [(d.body, d.message_id) for d in dead] == [({"job": 8}, "crasher")]
        assert attempts == list(range(1, len(attempts) + 1))
        assert MAX_ATTEMPTS <= len(attempts) <= MAX_ATTEMPTS + 1
        assert await rabbit.dead_letters(queue_name) == []
    finally:
        release.set()
        await rabbit.delete(queue_name)
        await rabbit.close()
