"""A consumer in its own process, for fault tests: prints each message id, then behaves.

Usage: python consumer_process.py URL QUEUE MODE HEARTBEAT
MODE: ack (handle and ack), die (exit before acking), hold (never finish: SIGSTOP me).
"""

from __future__ import annotations

import asyncio
import os
import sys

from alchemist.messaging.base import Delivery
from alchemist.messaging.rabbitmq import RabbitMQBroker


async def main(url: str, queue: str, mode: str, heartbeat: int) -> None:
    broker = RabbitMQBroker(url, heartbeat=heartbeat, max_attempts=3)
    await broker.connect()

    async def handler(delivery: Delivery) -> None:
        print(f"got {delivery.message_id} attempt {delivery.attempt}", flush=True)
        if mode == "die":
            os._exit(17)
        if mode == "hold":
            await asyncio.sleep(3600)
        print(f"acking {delivery.message_id}", flush=True)

    await broker.consume(queue, handler)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
