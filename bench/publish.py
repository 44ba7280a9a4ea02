"""Publish rate with publisher confirms (RabbitMQBroker), one at a time and concurrently.

Run: .venv/bin/python bench/publish.py [--count 2000] [--url amqp://guest:guest@127.0.0.1/]
Each publish returns only once RabbitMQ confirmed the persistent message; the baseline is
aio-pika's own publish on a confirming channel with the same message, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time

import aio_pika

from alchemist.messaging.rabbitmq import RabbitMQBroker

BODY = {"video_fid": "0" * 24, "mp3_fid": None, "username": "ann@example.com", "job_id": "x"}


async def run(url: str, count: int, concurrency: int) -> None:
    queue = f"bench.{secrets.token_hex(4)}"
    broker = RabbitMQBroker(url)
    await broker.connect()
    raw = await aio_pika.connect(url)
    channel = await raw.channel(publisher_confirms=True)
    try:
        await broker.publish(queue, BODY, message_id="warm")

        async def ours(n: int) -> None:
            await broker.publish(queue, BODY, message_id=str(n))

        async def theirs(n: int) -> None:
            message = aio_pika.Message(
                json.dumps(BODY).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)

        print(f"{count} persistent messages, confirmed, to a quorum queue")
        print(f"{'publisher':12} {'in flight':>9} {'msg/s':>8}")
        for width in (1, concurrency):
            for name, publish in (("alchemist", ours), ("aio-pika", theirs)):
                started = time.perf_counter()
                for batch in range(0, count, width):
                    await asyncio.gather(*(publish(n) for n in range(batch, batch + width)))
                rate = count / (time.perf_counter() - started)
                print(f"{name:12} {width:9} {rate:8.0f}")
    finally:
        await broker.delete(queue)
        await broker.close()
        await raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1/")
    args = parser.parse_args()
    asyncio.run(run(args.url, args.count, args.concurrency))


if __name__ == "__main__":
    main()
