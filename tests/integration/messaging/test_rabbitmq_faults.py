"""RabbitMQBroker under faults: dead consumers, cut connections, paused consumers, alarms."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alchemist.messaging.base import Delivery, PublishError
from alchemist.messaging.rabbitmq import RabbitMQBroker
from tests.proxy import TcpProxy

from .conftest import eventually

pytestmark = pytest.mark.rabbitmq
CONSUMER = Path(__file__).with_name("consumer_process.py")


@pytest.fixture
async def rabbit(rabbitmq_url: str, queue_name: str) -> AsyncIterator[RabbitMQBroker]:
    broker = RabbitMQBroker(rabbitmq_url, heartbeat=5, max_attempts=3, publish_timeout=5)
    await broker.connect()
    yield broker
    await broker.delete(queue_name)
    await broker.close()


class ConsumerProcess:
    """A consumer in another process, reading its printed lines."""

    def __init__(self, url: str, queue: str, mode: str, heartbeat: int = 5) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CONSUMER), url, queue, mode, str(heartbeat)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.expect("ready")

    def expect(self, prefix: str, timeout: float = 30) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"consumer exited ({self.process.poll()}) before {prefix!r}")
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no {prefix!r} within {timeout} s")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
        self.process.kill()
        self.process.wait()


@pytest.fixture
def consumers() -> Iterator[list[ConsumerProcess]]:
    started: list[ConsumerProcess] = []
    yield started
    for consumer in started:
        consumer.stop()


async def collect(broker: RabbitMQBroker, queue: str) -> tuple[list[Delivery], object]:
    seen: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)

    return seen, await broker.consume(queue, handler, prefetch=20)


async def test_a_consumer_that_dies_before_acking_loses_nothing(
    rabbit: RabbitMQBroker, rabbitmq_url: str, queue_name: str, consumers: list[ConsumerProcess]
) -> None:
    await rabbit.publish(queue_name, {"job": "x"}, message_id="fragile")
    dying = ConsumerProcess(rabbitmq_url, queue_name, "die")
    consumers.append(dying)
    assert dying.expect("got") == "got fragile attempt 1"
    assert dying.process.wait(10) == 17
    seen, subscription = await collect(rabbit, queue_name)
    await eventually(lambda: len(seen) == 1)
    await subscription.cancel()  # type: ignore[attr-defined]
    assert seen[0].body == {"job": "x"}
    assert seen[0].attempt == 2


async def test_a_message_that_keeps_killing_consumers_ends_in_the_dead_letters(
    rabbit: RabbitMQBroker, rabbitmq_url: str, queue_name: str, consumers: list[ConsumerProcess]
) -> None:
    await rabbit.publish(queue_name, {"job": "poison"}, message_id="poison")
    for attempt in range(1, rabbit.max_attempts + 2):
        dying = ConsumerProcess(rabbitmq_url, queue_name, "die")
        consumers.append(dying)
        try:
            line = dying.expect("got", timeout=5)
        except AssertionError:
            break  # nothing delivered any more: it was dead-lettered
        assert line == f"got poison attempt {attempt}"
        dying.process.wait(10)
    assert await rabbit.dead_letters(queue_name) == [{"job": "poison"}]


async def test_publisher_and_consumer_survive_cut_connections(
    rabbitmq_url: str, queue_name: str, tcp_proxy: TcpProxy
) -> None:
    url = rabbitmq_url.replace(":5672", f":{tcp_proxy.port}")
    publisher = RabbitMQBroker(url, heartbeat=5, publish_timeout=30)
    consumer = RabbitMQBroker(url, heartbeat=5)
    await publisher.connect()
    await consumer.connect()
    seen, subscription = await collect(consumer, queue_name)
    total = 300
    try:
        for n in range(total):
            if n in (100, 200):
                tcp_proxy.cut()
            await publisher.publish(queue_name, {"n": n}, message_id=f"n{n}")
        await eventually(lambda: {int(d.body["n"]) for d in seen} == set(range(total)), 60)
    finally:
        await subscription.cancel()  # type: ignore[attr-defined]
        await publisher.delete(queue_name)
        await publisher.close()
        await consumer.close()
    assert tcp_proxy.cuts == 2
    assert len(seen) >= total  # at least once: a message in flight at a cut may come twice


async def test_a_paused_consumer_loses_its_message_and_its_late_ack_is_harmless(
    rabbit: RabbitMQBroker, rabbitmq_url: str, queue_name: str, consumers: list[ConsumerProcess]
) -> None:
    await rabbit.publish(queue_name, {"job": "paused"}, message_id="paused")
    frozen = ConsumerProcess(rabbitmq_url, queue_name, "hold", heartbeat=1)
    consumers.append(frozen)
    assert frozen.expect("got").startswith("got paused attempt 1")
    os.kill(frozen.process.pid, signal.SIGSTOP)
    seen, subscription = await collect(rabbit, queue_name)
    # Missed heartbeats make the broker drop the frozen connection and requeue the message.
    await eventually(lambda: len(seen) == 1, 30)
    os.kill(frozen.process.pid, signal.SIGCONT)
    await asyncio.sleep(2)
    await subscription.cancel()  # type: ignore[attr-defined]
    assert seen[0].body == {"job": "paused"}
    assert seen[0].attempt == 2
    assert await rabbit.depth(queue_name) == 0
    assert await rabbit.dead_letters(queue_name) == []


async def test_a_long_job_keeps_heartbeats_flowing_and_is_not_redelivered(
    rabbitmq_url: str, queue_name: str
) -> None:
    worker = RabbitMQBroker(rabbitmq_url, heartbeat=1)
    watcher = RabbitMQBroker(rabbitmq_url, heartbeat=1)
    await worker.connect()
    await watcher.connect()
    finished: list[str] = []

    async def long_job(delivery: Delivery) -> None:
        await asyncio.to_thread(time.sleep, 6)  # blocking work, off the event loop
        finished.append(delivery.message_id)

    try:
        await worker.publish(queue_name, {"job": "long"}, message_id="long")
        busy = await worker.consume(queue_name, long_job)
        others, watching = await collect(watcher, queue_name)
        await eventually(lambda: finished == ["long"], 30)
        await asyncio.sleep(1)
        await busy.cancel()
        await watching.cancel()  # type: ignore[attr-defined]
        assert others == []
        assert await worker.depth(queue_name) == 0
    finally:
        await worker.delete(queue_name)
        await worker.close()
        await watcher.close()


async def test_publishing_fails_in_bounded_time_while_the_broker_refuses(
    rabbit: RabbitMQBroker, queue_name: str
) -> None:
    await rabbit.publish(queue_name, {"warm": True}, message_id="warm")  # declared beforehand
    current = subprocess.run(
        ["rabbitmqctl", "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    restore = current if current.replace(".", "", 1).isdigit() else "0.4"
    subprocess.run(["rabbitmqctl", "set_vm_memory_high_watermark", "0.000001"], check=True,
                   capture_output=True)  # fmt: skip
    try:
        await asyncio.sleep(2)  # the alarm takes effect on the next memory check
        started = time.monotonic()
        with pytest.raises(PublishError, match="did not confirm within 5 s"):
            await rabbit.publish(queue_name, {"job": "blocked"}, message_id="blocked")
        assert time.monotonic() - started < 10
    finally:
        subprocess.run(["rabbitmqctl", "set_vm_memory_high_watermark", restore], check=True,
                       capture_output=True)  # fmt: skip


async def test_an_unroutable_publish_is_an_error_the_caller_sees(
    rabbit: RabbitMQBroker, queue_name: str
) -> None:
    await rabbit.publish(queue_name, {"first": True}, message_id="first")
    await rabbit.delete(queue_name)
    rabbit._declared.add(queue_name)  # as if declared: the queue vanished under us
    with pytest.raises(PublishError, match="returned as unroutable"):
        await rabbit.publish(queue_name, {"lost": True}, message_id="lost")
