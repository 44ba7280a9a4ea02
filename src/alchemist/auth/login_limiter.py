"""Slow down password guessing: too many failures for one account in a window -> wait."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_TRACKED_ACCOUNTS = 100_000


@dataclass
class _Failures:
    count: int = 0
    window_start: float = field(default=0.0)


class FailedLoginLimiter:
    """Counts failed logins per account in a fixed window; in memory, per process."""

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def retry_after(self, account: str) -> int | None:
        """Seconds to wait before this account may try again, or None when it may now."""
        with self._lock:
            entry = self._current(account)
            if entry is None or entry.count < self.max_failures:
                return None
            remaining = entry.window_start + self.window_seconds - self._clock()
            return max(1, math.ceil(remaining))

    def record_failure(self, account: str) -> None:
        """Count one failed attempt for this account."""
        with self._lock:
            entry = self._current(account)
            if entry is None:
                if len(self._failures) >= MAX_TRACKED_ACCOUNTS:
                    self._prune()
                entry = self._failures[account] = _Failures(window_start=self._clock())
            entry.count += 1

    def reset(self, account: str) -> None:
        """Forget the failures of an account (after a correct login)."""
        with self._lock:
            self._failures.pop(account, None)

    def _current(self, account: str) -> _Failures | None:
        entry = self._failures.get(account)
        if entry is not None and self._clock() - entry.window_start >= self.window_seconds:
            del self._failures[account]
            return None
        return entry

    def _prune(self) -> None:
        now = self._clock()
        expired = [
            key for key, entry in self._failures.items() if now - entry.window_start >= self.window_seconds
        ]
        for key in expired:
            del self._failures[key]
