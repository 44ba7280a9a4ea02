"""Argon2id password hashing with bounded concurrency and a constant-cost path for unknown users.

Every hash or verify holds ARGON2_MEMORY_KIB of memory while it runs, so a process runs them on
a pool of LOGIN_CONCURRENCY threads and nowhere else: memory stays under concurrency x memory
cost whatever the load (and glibc, which keeps a freed block below 32 MiB in the arena of the
thread that used it, keeps at most one per pool thread).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from alchemist.config import Settings

T = TypeVar("T")
# OWASP's minimum for argon2id (Password Storage Cheat Sheet): 19 MiB, 2 passes, 1 lane.
OWASP_MINIMUM = {"ARGON2_MEMORY_KIB": 19_456, "ARGON2_TIME_COST": 2, "ARGON2_PARALLELISM": 1}


class PasswordVault:
    """Hashes and checks passwords; rejecting an unknown user costs one full verify too.

    With `concurrency`, argon2 runs only on that many threads of its own (the hard bound on its
    memory); login's HashingGate queues in front of them, admin routes and the CLI behind them.
    """

    def __init__(self, hasher: PasswordHasher | None = None, concurrency: int | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="argon2") if concurrency else None
        self._decoy: str | None = None  # made on first use (the CLI never needs it)
        self._decoy_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordVault:
        """A vault with the configured argon2 parameters and LOGIN_CONCURRENCY threads."""
        hasher = PasswordHasher(
            time_cost=settings.ARGON2_TIME_COST,
            memory_cost=settings.ARGON2_MEMORY_KIB,
            parallelism=settings.ARGON2_PARALLELISM,
        )
        return cls(hasher, concurrency=settings.LOGIN_CONCURRENCY)

    @property
    def memory_kib(self) -> int:
        """The memory one hash or verify with the current parameters takes."""
        return int(self._hasher.memory_cost)

    def hash(self, password: str) -> str:
        """An argon2id hash string (salted, with its parameters); blocks until a thread is free."""
        return self._run(self._hasher.hash, password)

    async def hash_async(self, password: str) -> str:
        """hash() for the event loop."""
        return await self._run_async(self._hasher.hash, password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches; None as the hash checks against the decoy.

        A stored hash keeps the parameters it was made with, so hashes from before a change of
        ARGON2_* settings still verify (and needs_rehash says to renew them).
        """
        right = self._run(self._matches, password_hash or self.decoy_hash, password)
        return right and password_hash is not None

    async def verify_async(self, password_hash: str | None, password: str) -> bool:
        """verify() for the event loop (the decoy is made at the app's start, so nothing blocks)."""
        right = await self._run_async(self._matches, password_hash or self.decoy_hash, password)
        return right and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the configured ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return False

    @property
    def decoy_hash(self) -> str:
        """The hash checked for unknown users: same parameters, so they cost as much as a wrong password."""
        with self._decoy_lock:
            if self._decoy is None:
                self._decoy = self.hash("decoy password for unknown users")
            return self._decoy

    def _matches(self, stored: str, password: str) -> bool:
        try:
            self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return True

    def _run(self, work: Callable[..., T], *args: object) -> T:
        if self._pool is None:
            return work(*args)
        return self._pool.submit(work, *args).result()

    async def _run_async(self, work: Callable[..., T], *args: object) -> T:
        if self._pool is None:
            return await asyncio.to_thread(work, *args)
        return await asyncio.wrap_future(self._pool.submit(work, *args))


class HashingBusyError(Exception):
    """Every hashing slot stayed taken for the whole queueing time (or the queue was full)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many logins at once; try again in {retry_after} s")
        self.retry_after = retry_after


class HashingGate:
    """Admission to password hashing for async handlers: a few at once, a short bounded queue.

    Waiting happens on the event loop (no thread is held), so a burst of logins costs a
    coroutine each, not a thread or argon2's memory each.
    """

    def __init__(self, concurrency: int, queue_seconds: float, queue_limit: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self.queue_seconds = queue_seconds
        self.queue_limit = queue_limit
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one hashing slot; raises HashingBusyError when none frees up in time."""
        retry_after = max(1, math.ceil(self.queue_seconds))
        if not self._slots.locked():
            await self._slots.acquire()  # free: taken at once, without suspending
        elif self.waiting >= self.queue_limit:
            raise HashingBusyError(retry_after)
        else:
            self.waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), self.queue_seconds)
            except TimeoutError as exc:
                raise HashingBusyError(retry_after) from exc
            finally:
                self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
