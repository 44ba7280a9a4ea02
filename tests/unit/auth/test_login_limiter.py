"""The login limiter's policy on a real (SQLite) database, with a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from alchemist.auth.login_limiter import Attempt, LoginLimiter, LoginThrottledError
from alchemist.db.engine import build_engine
from alchemist.db.migrate import upgrade
from alchemist.db.models import LoginFailure


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = build_engine(make_url(f"sqlite+pysqlite:///{tmp_path / 'limiter.db'}"))
    upgrade(engine)
    yield sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(sessions: sessionmaker[Session], clock: Clock) -> LoginLimiter:
    return LoginLimiter(sessions, max_failures=3, max_failures_per_address=5, window_seconds=60, clock=clock)


def fail(limiter: LoginLimiter, account: str, address: str, times: int) -> None:
    for _ in range(times):
        limiter.begin(account, address)  # a failure simply keeps its place


def test_blocks_after_max_failures_until_the_window_ends(limiter: LoginLimiter, clock: Clock) -> None:
    fail(limiter, "ann", "203.0.113.1", 3)
    with pytest.raises(LoginThrottledError) as blocked:
        limiter.begin("ann", "203.0.113.1")
    assert blocked.value.retry_after == 60
    clock.advance(45)
    with pytest.raises(LoginThrottledError) as later:
        limiter.begin("ann", "203.0.113.1")
    assert later.value.retry_after == 15
    clock.advance(15)
    limiter.begin("ann", "203.0.113.1")  # a new window


def test_accounts_and_addresses_are_counted_apart(limiter: LoginLimiter) -> None:
    fail(limiter, "ann", "203.0.113.1", 3)
    limiter.begin("bob", "203.0.113.1")
    limiter.begin("ann", "198.51.100.2")  # the owner's own address
    limiter.begin("ann", "2001:db8::1")


def test_an_address_guessing_at_many_accounts_is_stopped(limiter: LoginLimiter) -> None:
    for account in ("a", "b", "c", "d", "e"):
        limiter.begin(account, "203.0.113.9")
    with pytest.raises(LoginThrottledError):
        limiter.begin("f", "203.0.113.9")
    limiter.begin("f", "203.0.113.10")


def test_one_ipv6_slash_64_is_one_address(limiter: LoginLimiter) -> None:
    fail(limiter, "ann", "2001:db8:1:2::1", 3)
    with pytest.raises(LoginThrottledError):
        limiter.begin("ann", "2001:db8:1:2:ffff::7")
    limiter.begin("ann", "2001:db8:1:3::1")


def test_a_blocked_attempt_counts_nothing(limiter: LoginLimiter, clock: Clock) -> None:
    fail(limiter, "ann", "203.0.113.1", 3)
    for _ in range(10):  # over the pair's limit: the address's count must not grow
        with pytest.raises(LoginThrottledError):
            limiter.begin("ann", "203.0.113.1")
    limiter.begin("bob", "203.0.113.1")
    limiter.begin("carl", "203.0.113.1")  # 3 + 2 = 5 for the address, its limit


def test_success_forgets_the_pair_and_gives_the_address_its_place_back(limiter: LoginLimiter) -> None:
    fail(limiter, "ann", "203.0.113.1", 2)
    limiter.succeeded(limiter.begin("ann", "203.0.113.1"))
    fail(limiter, "ann", "203.0.113.1", 3)  # the pair starts from nothing
    with pytest.raises(LoginThrottledError):
        limiter.begin("ann", "203.0.113.1")


def test_an_abandoned_attempt_does_not_count(limiter: LoginLimiter) -> None:
    attempts: list[Attempt] = [limiter.begin("ann", "203.0.113.1") for _ in range(3)]
    for attempt in attempts:
        limiter.abandoned(attempt)
    fail(limiter, "ann", "203.0.113.1", 3)


def test_ended_windows_are_pruned(
    limiter: LoginLimiter, sessions: sessionmaker[Session], clock: Clock
) -> None:
    for account in ("a", "b", "c"):
        limiter.begin(account, "203.0.113.1")
    clock.advance(61)
    limiter.begin("d", "198.51.100.1")
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(LoginFailure)) == 2  # d's pair and address
