"""RabbitMQBroker (aio-pika): durable quorum queues, publisher confirms, dead-letter queues.

Every work queue Q gets a fanout exchange `Q.dlx` and a queue `Q.dead`. Q is a quorum
queue with `x-delivery-limit`, so a message whose consumer keeps dying is dead-lettered
instead of looping; a handler's transient failure is republished to the back of Q with
its attempt count in the `x-attempt` header, then acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pamqp.commands import Basic
from yarl import URL

from alchemist.messaging.base import Delivery, Handler, PublishError, Verdict, run_handler

logger = logging.getLogger(__name__)
ATTEMPT_HEADER = "x-attempt"
RECONNECT_POLL = 0.2
DEAD_RETRY_DELAY = 5.0  # a dead-letter handler that fails (e.g. the database is down) retries this often
# Raised by aio-pika/aiormq while a connection or channel is down (robust ones come back).
CONNECTION_ERRORS = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    RuntimeError,
)


class RabbitMQSubscription:
    """A consumer on its own channel."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue: AbstractQueue,
        tag: str,
        in_flight: set[asyncio.Task[None]],
    ) -> None:
        self._channel, self._queue, self._tag = channel, queue, tag
        self._in_flight = in_flight

    async def cancel(self, grace: float = 0.0) -> None:
        """Cancel the consumer, let handlers finish for `grace` s, then close the channel.

        Closing the channel returns every unacked message to the queue.
        """
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self._queue.cancel(self._tag)
        if grace > 0 and self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self._channel.close()


class RabbitMQBroker:
    """At-least-once messaging over RabbitMQ; reconnects and resumes consuming by itself."""

    def __init__(
        self,
        url: str,
        *,
        max_attempts: int = 3,
        publish_timeout: float = 10.0,
        heartbeat: int = 30,
        connection_name: str = "alchemist",
    ) -> None:
        self._url = str(URL(url).update_query(heartbeat=heartbeat))
        self.max_attempts = max_attempts
        self.publish_timeout = publish_timeout
        self._connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._declared: set[str] = set()

    async def connect(self) -> None:
        """Open a robust connection and a confirming publish channel."""
        self._connection = await aio_pika.connect_robust(
            self._url,
            client_properties={"connection_name": self._connection_name},
            timeout=10,
        )
        self._publisher = await self._connection.channel(publisher_confirms=True)

    async def close(self) -> None:
        """Close the connection (and every channel on it)."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def ping(self) -> None:
        """Raise unless the connection is open."""
        if self._connection is None or self._connection.is_closed:
            raise ConnectionError("not connected to RabbitMQ")

    async def publish(self, queue: str, body: dict[str, Any], *, message_id: str) -> None:
        """Publish persistently with `mandatory`; return once the broker confirms it."""
        await self._publish(queue, json.dumps(body).encode(), message_id, attempt=1)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 1) -> RabbitMQSubscription:
        """Consume on a new channel with this prefetch; the handler's verdict settles each."""
        channel: AbstractRobustChannel = await self._require().channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await self._declare(channel, queue)

        in_flight: set[asyncio.Task[None]] = set()

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                in_flight.add(task)
            try:
                await self._settle(queue, handler, message)
            finally:
                in_flight.discard(task)

        tag = await declared.consume(on_message, no_ack=False)
        return RabbitMQSubscription(channel, declared, tag, in_flight)

    async def consume_dead(self, queue: str, handler: Handler, *, prefetch: int = 1) -> RabbitMQSubscription:
        """Consume `queue.dead`; a failing handler's message goes back to it (nothing is dropped)."""
        channel: AbstractRobustChannel = await self._require().channel()
        await channel.set_qos(prefetch_count=prefetch)
        await self._declare(channel, queue)
        dead = await channel.get_queue(f"{queue}.dead")
        in_flight: set[asyncio.Task[None]] = set()

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                in_flight.add(task)
            try:
                await self._settle_dead(f"{queue}.dead", handler, message)
            finally:
                in_flight.discard(task)

        tag = await dead.consume(on_message, no_ack=False)
        return RabbitMQSubscription(channel, dead, tag, in_flight)

    async def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        """Take every message out of `queue.dead`."""
        channel = await self._require().channel()
        try:
            await self._declare(channel, queue)
            dead = await channel.get_queue(f"{queue}.dead")
            bodies = []
            while (message := await dead.get(no_ack=False, fail=False)) is not None:
                bodies.append(json.loads(message.body))
                await message.ack()
            return bodies
        finally:
            await channel.close()

    async def depth(self, queue: str) -> int:
        """Messages ready in the queue (not counting those being handled)."""
        channel = await self._require().channel()
        try:
            declared = await self._declare(channel, queue)
            return int(declared.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def delete(self, queue: str) -> None:
        """Delete a work queue with its dead-letter queue and exchange (tests, tear-down)."""
        channel = await self._require().channel()
        try:
            for name in (queue, f"{queue}.dead"):
                await channel.queue_delete(name)
            await channel.exchange_delete(f"{queue}.dlx")
            self._declared.discard(queue)
        finally:
            await channel.close()

    def _require(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise ConnectionError("RabbitMQBroker.connect() was not called")
        return self._connection

    async def _declare(self, channel: aio_pika.abc.AbstractChannel, queue: str) -> AbstractQueue:
        try:
            dlx = await channel.declare_exchange(f"{queue}.dlx", aio_pika.ExchangeType.FANOUT, durable=True)
            dead = await channel.declare_queue(
                f"{queue}.dead", durable=True, arguments={"x-queue-type": "quorum"}
            )
            await dead.bind(dlx)
            declared = await channel.declare_queue(
                queue,
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-dead-letter-exchange": f"{queue}.dlx",
                    "x-delivery-limit": self.max_attempts,
                },
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConnectionError(
                f"queue {queue!r} exists with other settings (made by hand?); delete it so "
                f"alchemist can declare it as a quorum queue with a dead-letter queue: {exc}"
            ) from exc
        self._declared.add(queue)
        return declared

    async def _publish(self, queue: str, body: bytes, message_id: str, attempt: int) -> None:
        if self._publisher is None:
            raise PublishError("RabbitMQBroker.connect() was not called")
        if queue not in self._declared:
            await self._declare(self._publisher, queue)
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            headers={ATTEMPT_HEADER: attempt},
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PublishError(f"RabbitMQ did not confirm within {self.publish_timeout:.0f} s")
            try:
                confirmation = await self._publisher.default_exchange.publish(
                    message, routing_key=queue, mandatory=True, timeout=remaining
                )
            except asyncio.TimeoutError as exc:
                raise PublishError(
                    f"RabbitMQ did not confirm within {self.publish_timeout:.0f} s "
                    "(is it refusing publishes, e.g. a memory or disk alarm?)"
                ) from exc
            except aiormq.exceptions.DeliveryError as exc:
                raise PublishError(f"RabbitMQ refused the message: {exc}") from exc
            except CONNECTION_ERRORS:
                # The robust connection is coming back; try again until the deadline.
                await asyncio.sleep(RECONNECT_POLL)
                continue
            _check_confirmation(confirmation, queue)
            return

    async def _settle_dead(self, queue: str, handler: Handler, message: AbstractIncomingMessage) -> None:
        await _settle_dead_message(queue, handler, message)

    async def _settle(self, queue: str, handler: Handler, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
        except (ValueError, UnicodeDecodeError):
            logger.error("message %s on %s is not JSON: dead-lettered", message.message_id, queue)
            await _quietly(message.reject(requeue=False))
            return
        headers = message.headers or {}
        attempt = int(headers.get(ATTEMPT_HEADER, 1)) + int(headers.get("x-delivery-count", 0))  # type: ignore[arg-type]
        delivery = Delivery(queue, body, message.message_id or "", attempt)
        verdict = await run_handler(handler, delivery, self.max_attempts)
        if verdict is Verdict.ACK:
            await _quietly(message.ack())
        elif verdict is Verdict.DEAD:
            await _quietly(message.reject(requeue=False))
        else:
            try:
                await self._publish(queue, message.body, delivery.message_id, attempt + 1)
            except PublishError:
                logger.exception(
                    "could not requeue message %s; the broker will redeliver it",
                    delivery.message_id,
                )
                await _quietly(message.nack(requeue=True))
                return
            await _quietly(message.ack())


async def _settle_dead_message(queue: str, handler: Handler, message: AbstractIncomingMessage) -> None:
    """Ack a handled dead letter; on failure wait a little and requeue it (a dead letter is final)."""
    try:
        body = json.loads(message.body)
    except (ValueError, UnicodeDecodeError):
        body = {}
    delivery = Delivery(queue, body if isinstance(body, dict) else {}, message.message_id or "", 1)
    try:
        await handler(delivery)
    except Exception:
        logger.exception("dead letter %s on %s: handler failed; requeued", delivery.message_id, queue)
        await asyncio.sleep(DEAD_RETRY_DELAY)
        await _quietly(message.nack(requeue=True))
        return
    await _quietly(message.ack())


def _check_confirmation(confirmation: object, queue: str) -> None:
    if isinstance(confirmation, Basic.Ack):
        return
    if isinstance(getattr(confirmation, "delivery", None), Basic.Return):
        raise PublishError(f"no queue {queue!r} took the message (returned as unroutable)")
    raise PublishError(f"RabbitMQ did not accept the message: {confirmation!r}")


async def _quietly(settle: Any) -> None:
    """Ack/reject; after a lost connection the broker has already requeued the message."""
    try:
        await settle
    except CONNECTION_ERRORS as exc:
        logger.warning("could not settle a message (%s); the broker will redeliver it", exc)
