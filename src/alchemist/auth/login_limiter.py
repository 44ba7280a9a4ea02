"""Slow down password guessing, with counts in the database that every auth replica shares.

The policy (README, "The auth service on its own"):

- **Per account and client address.** LOGIN_MAX_FAILURES failed logins for one account from one
  client address within LOGIN_FAILURE_WINDOW_SECONDS (counted from the first of them) make that
  account wait, *from that address*, until the window ends: 429 with Retry-After.
- **Per client address.** LOGIN_MAX_FAILURES_PER_ADDRESS failures from one address, whatever the
  accounts, make that address wait too (an IPv6 client counts as its /64).
- **Never per account alone.** A stranger's guesses from their address never lock the owner out
  of their own account at theirs; the owner is at most slowed when both share one address (NAT).
- **Counted before the check.** An attempt takes its place in both counts, with one conditional
  UPDATE per count, before argon2 runs: N parallel wrong passwords get at most the limit of
  password checks, whichever replicas they reach. A correct password gives its place back and
  clears its pair's count; an attempt that never reached the check (503) gives it back too.

The account is the canonical email (users.canonical_email); the address is the client's, as the
TrustedProxyHeaders middleware resolved it from the peer and trusted X-Forwarded-For.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from alchemist.db.engine import transaction
from alchemist.db.models import LoginFailure, utcnow
from alchemist.db.upsert import insert_if_absent
from alchemist.proxies import limit_key

logger = logging.getLogger(__name__)
# MySQL error codes worth another try: deadlock victim, lock wait timeout.
RETRYABLE_MYSQL_ERRORS = frozenset({1213, 1205})
ATTEMPTS = 5
MAX_STORED_ACCOUNT = 255


class LoginThrottledError(Exception):
    """Too many failures for this account from this address, or from this address at all."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempt:
    """A login attempt that holds its place in the counts until it succeeds or is abandoned."""

    pair_key: str
    address_key: str


@dataclass(frozen=True)
class _Count:
    key: str
    account: str | None
    address: str
    limit: int


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


class LoginLimiter:
    """Failed-login counts per (account, address) and per address, in fixed windows, in the database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_failures: int,
        max_failures_per_address: int,
        window_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.max_failures = max_failures
        self.max_failures_per_address = max_failures_per_address
        self.window = timedelta(seconds=window_seconds)
        self._clock = clock
        self._pruned_at: datetime | None = None

    def begin(self, account: str, address: str | None) -> Attempt:
        """Count an attempt before its password is checked; LoginThrottledError when over a limit."""
        where = limit_key(address)
        pair = _Count(_key("account", account, where), account[:MAX_STORED_ACCOUNT], where, self.max_failures)
        alone = _Count(_key("address", where), None, where, self.max_failures_per_address)
        self._retrying(self._count, pair, alone)
        self._prune_now_and_then()
        return Attempt(pair.key, alone.key)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: forget the pair's failures and give the address its place back."""
        self._retrying(self._release, attempt, forget_pair=True)

    def abandoned(self, attempt: Attempt) -> None:
        """The password was never checked (the service was busy): the attempt does not count."""
        self._retrying(self._release, attempt, forget_pair=False)

    def _count(self, session: Session, *counts: _Count) -> None:
        now = self._clock()
        blocked: list[str] = []
        # Rows are locked in key order, so two attempts never wait for each other in a cycle.
        for count in sorted(counts, key=lambda c: c.key):
            row = {"key": count.key, "account": count.account, "address": count.address}
            insert_if_absent(session, LoginFailure.__table__, {**row, "failures": 0, "window_start": now})  # type: ignore[arg-type]
            session.execute(  # a window that has ended starts over
                update(LoginFailure)
                .where(LoginFailure.key == count.key, LoginFailure.window_start <= now - self.window)
                .values(failures=0, window_start=now)
            )
            # The check and the count in one statement: the row lock makes parallel attempts queue.
            counted = session.execute(
                update(LoginFailure)
                .where(LoginFailure.key == count.key, LoginFailure.failures < count.limit)
                .values(failures=LoginFailure.failures + 1)
            )
            if counted.rowcount == 0:  # type: ignore[attr-defined]
                blocked.append(count.key)
        if blocked:
            starts = session.scalars(select(LoginFailure.window_start).where(LoginFailure.key.in_(blocked)))
            ends = [_utc(start) + self.window for start in starts]
            wait = max(((end - now).total_seconds() for end in ends), default=1.0)
            raise LoginThrottledError(max(1, math.ceil(wait)))  # rolls back what was counted above

    def _release(self, session: Session, attempt: Attempt, *, forget_pair: bool) -> None:
        if forget_pair:
            session.execute(delete(LoginFailure).where(LoginFailure.key == attempt.pair_key))
            keys = [attempt.address_key]
        else:
            keys = sorted([attempt.pair_key, attempt.address_key])
        for key in keys:
            session.execute(
                update(LoginFailure)
                .where(LoginFailure.key == key, LoginFailure.failures > 0)
                .values(failures=LoginFailure.failures - 1)
            )

    def _retrying(self, work: Callable[..., None], *args: object, **kwargs: object) -> None:
        """Run work(session, ...) in a transaction; again when MySQL picked it as a deadlock victim."""
        for attempt in range(ATTEMPTS):
            try:
                with transaction(self._sessions) as session:
                    work(session, *args, **kwargs)
                return
            except OperationalError as exc:
                code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
                if code not in RETRYABLE_MYSQL_ERRORS or attempt == ATTEMPTS - 1:
                    raise

    def _prune_now_and_then(self) -> None:
        """Delete counts whose window has ended, at most once a window per process."""
        now = self._clock()
        if self._pruned_at is not None and now - self._pruned_at < self.window:
            return
        self._pruned_at = now
        try:
            with transaction(self._sessions) as session:
                session.execute(delete(LoginFailure).where(LoginFailure.window_start <= now - self.window))
        except OperationalError as exc:  # housekeeping: the next window tries again
            logger.warning("could not prune old login failures: %s", exc)


def _utc(moment: datetime) -> datetime:
    # SQLite and MySQL hand stored moments back naive; every one of them is UTC.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
