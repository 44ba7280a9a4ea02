"""The login queue: a few hashes at once, a short bounded wait, then 503 with Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from alchemist.auth.passwords import HashingBusyError, HashingGate


async def test_at_most_concurrency_hold_a_slot_and_the_rest_wait() -> None:
    gate = HashingGate(concurrency=2, queue_seconds=30, queue_limit=10)
    inside, most = 0, 0
    release = asyncio.Event()

    async def login() -> None:
        nonlocal inside, most
        async with gate.slot():
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(login()) for _ in range(6)]
    while inside < 2 or gate.waiting < 4:  # noqa: ASYNC110 (the gate has no event to wait on)
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert (inside, gate.waiting) == (2, 4)
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2


@pytest.mark.parametrize(("queue_seconds", "retry_after"), [(0.01, 1), (0.5, 1), (1.2, 2)])
async def test_a_wait_longer_than_the_queue_time_is_busy(queue_seconds: float, retry_after: int) -> None:
    gate = HashingGate(concurrency=1, queue_seconds=queue_seconds, queue_limit=10)
    async with gate.slot():
        with pytest.raises(HashingBusyError) as busy:
            async with gate.slot():
                pass
    assert busy.value.retry_after == retry_after  # whole seconds, rounded up, at least 1
    assert gate.waiting == 0
    async with gate.slot():  # the slot is free again afterwards
        pass


async def test_a_full_queue_is_busy_at_once() -> None:
    gate = HashingGate(concurrency=1, queue_seconds=30, queue_limit=2)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]  # one inside, two queued
    while gate.waiting < 2:  # noqa: ASYNC110 (the gate has no event to wait on)
        await asyncio.sleep(0)
    assert gate.waiting == 2
    with pytest.raises(HashingBusyError):
        async with gate.slot():
            pass
    release.set()
    await asyncio.gather(*tasks)
