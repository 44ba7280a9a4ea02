"""The Broker interface: confirmed publishes, acked-after-handler consumes, bounded retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class PublishError(Exception):
    """The broker did not take the message (nacked, unroutable, refused or timed out)."""


class PermanentFailure(Exception):  # noqa: N818 (a verdict handlers raise, not a bug report)
    """Raised by a handler when the message can never succeed: it goes to the dead letters."""


@dataclass(frozen=True)
class Delivery:
    """One message handed to a handler; `attempt` starts at 1."""

    queue: str
    body: dict[str, Any]
    message_id: str
    attempt: int


Handler = Callable[[Delivery], Awaitable[None]]


class Subscription(Protocol):
    """A running consumer."""

    async def cancel(self, grace: float = 0.0) -> None:
        """Stop taking messages; give handlers in progress `grace` seconds, then requeue them."""
        ...


class Broker(Protocol):
    """Queues of JSON messages, at least once, with dead-letter queues."""

    async def connect(self) -> None:
        """Open connections; queues are declared when first used."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...

    async def publish(self, queue: str, body: dict[str, Any], *, message_id: str) -> None:
        """Return only once the broker holds the message durably; else raise PublishError."""
        ...

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 1) -> Subscription:
        """Run the handler for each message; ack after it returns."""
        ...

    async def consume_dead(self, queue: str, handler: Handler, *, prefetch: int = 1) -> Subscription:
        """Run the handler for each dead letter of `queue` (ack after it returns, else retry)."""
        ...

    async def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        """Take every message out of the queue's dead-letter queue (for inspection and tests)."""
        ...

    async def ping(self) -> None:
        """Raise when the broker is unreachable."""
        ...


class Verdict(Enum):
    """What to do with a message once its handler has run."""

    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


async def run_handler(handler: Handler, delivery: Delivery, max_attempts: int) -> Verdict:
    """Run one handler and decide: ack, retry later, or dead-letter (never loop forever)."""
    try:
        await handler(delivery)
    except PermanentFailure as exc:
        logger.warning("message %s on %s failed for good: %s", delivery.message_id, delivery.queue, exc)
        return Verdict.DEAD
    except Exception:
        if delivery.attempt >= max_attempts:
            logger.exception(
                "message %s on %s failed on its last attempt (%d): dead-lettered",
                delivery.message_id, delivery.queue, delivery.attempt,
            )  # fmt: skip
            return Verdict.DEAD
        logger.exception(
            "message %s on %s failed (attempt %d of %d): retrying",
            delivery.message_id, delivery.queue, delivery.attempt, max_attempts,
        )  # fmt: skip
        return Verdict.RETRY
    return Verdict.ACK


class SubscriptionGroup:
    """Several consumers stopped as one."""

    def __init__(self, *members: Subscription) -> None:
        self.members = members

    async def cancel(self, grace: float = 0.0) -> None:
        """Cancel each (all get the same grace, at once)."""
        await asyncio.gather(*(member.cancel(grace) for member in self.members))
