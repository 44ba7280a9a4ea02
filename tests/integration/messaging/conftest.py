"""Every Broker adapter, each on queues of its own per test."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator

import pytest

from alchemist.messaging.base import Broker
from alchemist.messaging.memory import InMemoryBroker
from alchemist.messaging.rabbitmq import RabbitMQBroker
from tests.conftest import unavailable
from tests.proxy import TcpProxy

RABBITMQ_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MAX_ATTEMPTS = 3


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The RabbitMQ on this machine (skipped, or failed in CI, when it isn't running)."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as exc:
        unavailable(f"RabbitMQ not reachable at 127.0.0.1:5672: {exc}")
    return RABBITMQ_URL


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test or run uses."""
    return f"test.{secrets.token_hex(4)}.video"


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def broker(request: pytest.FixtureRequest, queue_name: str) -> AsyncIterator[Broker]:
    """A connected broker; RabbitMQ queues are deleted afterwards."""
    if request.param == "memory":
        yield InMemoryBroker(max_attempts=MAX_ATTEMPTS)
        return
    url = request.getfixturevalue("rabbitmq_url")
    rabbit = RabbitMQBroker(url, max_attempts=MAX_ATTEMPTS, heartbeat=5)
    await rabbit.connect()
    try:
        yield rabbit
    finally:
        await rabbit.delete(queue_name)
        await rabbit.close()


async def eventually(check: object, timeout: float = 15.0) -> None:
    """Wait until check() is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def tcp_proxy(rabbitmq_url: str) -> AsyncIterator[TcpProxy]:
    """A cuttable path to the broker."""
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    yield proxy
    await proxy.stop()
