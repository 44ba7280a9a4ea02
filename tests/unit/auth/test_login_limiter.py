from alchemist.auth.login_limiter import FailedLoginLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_blocks_after_max_failures_until_the_window_ends() -> None:
    clock = Clock()
    limiter = FailedLoginLimiter(max_failures=3, window_seconds=60, clock=clock)
    for _ in range(2):
        limiter.record_failure("ann")
        assert limiter.retry_after("ann") is None
    limiter.record_failure("ann")
    assert limiter.retry_after("ann") == 60
    clock.now += 45.5
    assert limiter.retry_after("ann") == 15
    clock.now += 15
    assert limiter.retry_after("ann") is None


def test_accounts_are_counted_apart_and_success_resets() -> None:
    limiter = FailedLoginLimiter(max_failures=1, window_seconds=60, clock=Clock())
    limiter.record_failure("ann")
    assert limiter.retry_after("ann") == 60
    assert limiter.retry_after("bob") is None
    limiter.reset("ann")
    assert limiter.retry_after("ann") is None
