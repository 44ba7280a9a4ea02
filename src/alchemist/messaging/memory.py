"""InMemoryBroker: the same semantics inside one process (the embedded default).

Nothing survives a restart: the pipeline re-enqueues unfinished jobs from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from alchemist.messaging.base import Delivery, Handler, Verdict, run_handler


@dataclass
class _Message:
    body: bytes
    message_id: str
    attempt: int = 1


@dataclass
class _Queue:
    ready: asyncio.Queue[_Message] = field(default_factory=asyncio.Queue)
    dead: list[_Message] = field(default_factory=list)
    dead_handler: Handler | None = None


class InMemorySubscription:
    """A consumer task with `prefetch` handlers at most in flight."""

    def __init__(
        self,
        task: asyncio.Task[None],
        in_flight: set[asyncio.Task[None]],
        stop_taking: asyncio.Event,
    ) -> None:
        self._task = task
        self._in_flight = in_flight
        self._stop_taking = stop_taking

    async def cancel(self, grace: float = 0.0) -> None:
        """Stop taking; after `grace` seconds, messages still in hand go back to the queue."""
        self._stop_taking.set()
        if grace > 0 and self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class InMemoryBroker:
    """Queues in this process; messages are copied as JSON, as they would be on the wire."""

    def __init__(self, max_attempts: int = 3, dead_retry_delay: float = 1.0) -> None:
        self.max_attempts = max_attempts
        self.dead_retry_delay = dead_retry_delay
        self._queues: defaultdict[str, _Queue] = defaultdict(_Queue)
        self._dead_queues: set[str] = set()

    async def connect(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        """Always reachable."""

    async def publish(self, queue: str, body: dict[str, Any], *, message_id: str) -> None:
        """Enqueue a copy of the message."""
        self._queues[queue].ready.put_nowait(_Message(json.dumps(body).encode(), message_id))

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 1) -> InMemorySubscription:
        """Start a consumer task."""
        in_flight: set[asyncio.Task[None]] = set()
        stop_taking = asyncio.Event()
        task = asyncio.create_task(self._consume(queue, handler, prefetch, in_flight, stop_taking))
        return InMemorySubscription(task, in_flight, stop_taking)

    async def consume_dead(self, queue: str, handler: Handler, *, prefetch: int = 1) -> InMemorySubscription:
        """Hand each dead letter of `queue` to the handler (the ones already there first)."""
        dead_queue = f"{queue}.dead"
        self._queues[queue].dead_handler = handler
        self._dead_queues.add(dead_queue)
        for message in self._queues[queue].dead:
            self._queues[dead_queue].ready.put_nowait(message)
        self._queues[queue].dead = []
        return await self.consume(dead_queue, handler, prefetch=prefetch)

    async def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        """Take the dead letters of a queue."""
        dead, self._queues[queue].dead = self._queues[queue].dead, []
        return [json.loads(message.body) for message in dead]

    def depth(self, queue: str) -> int:
        """Messages waiting in a queue."""
        return self._queues[queue].ready.qsize()

    async def _consume(
        self,
        queue: str,
        handler: Handler,
        prefetch: int,
        in_flight: set[asyncio.Task[None]],
        stop_taking: asyncio.Event,
    ) -> None:
        slots = asyncio.Semaphore(prefetch)
        state = self._queues[queue]
        try:
            while True:
                await slots.acquire()
                message = await state.ready.get()
                if stop_taking.is_set():
                    state.ready.put_nowait(message)
                    await asyncio.Event().wait()  # taking nothing more; wait to be cancelled
                task = asyncio.create_task(self._handle(queue, state, handler, message))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _handle(self, queue: str, state: _Queue, handler: Handler, message: _Message) -> None:
        delivery = Delivery(queue, json.loads(message.body), message.message_id, message.attempt)
        try:
            verdict = await run_handler(handler, delivery, self.max_attempts)
        except asyncio.CancelledError:
            # Unacked when the consumer stopped: back to the queue, as RabbitMQ would do.
            message.attempt += 1
            state.ready.put_nowait(message)
            raise
        if queue in self._dead_queues and verdict is not Verdict.ACK:
            # A dead letter is final: never dropped, tried again a little later (as on RabbitMQ).
            asyncio.get_running_loop().call_later(self.dead_retry_delay, state.ready.put_nowait, message)
        elif verdict is Verdict.RETRY:
            message.attempt += 1
            state.ready.put_nowait(message)
        elif verdict is Verdict.DEAD:
            if state.dead_handler is not None:  # consumed, as RabbitMQ's Q.dead would be
                self._queues[f"{queue}.dead"].ready.put_nowait(_Message(message.body, message.message_id))
            else:
                state.dead.append(message)
