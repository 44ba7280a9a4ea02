"""A burst of concurrent logins against a real `alchemist auth` process: its memory stays under
LOGIN_CONCURRENCY x argon2's memory cost over its own idle baseline, and every login gets 200,
or 503 with Retry-After; none hangs.

Before the bound, 40 logins at 64 MiB a hash took one process from 100 MiB to 2.1 GiB
(`bench/login_memory.py` prints both figures).
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy.orm import sessionmaker

from alchemist.auth.passwords import PasswordVault
from alchemist.auth.users import add_user
from alchemist.config import Settings
from alchemist.db.engine import build_engine, transaction
from alchemist.db.migrate import upgrade

from .conftest import free_port, running

MIB = 1 << 20
LOGINS = 40
USERS = 8  # 5 logins an account: within LOGIN_MAX_FAILURES, so no answer is a 429
# Beyond the hashes themselves: 40 requests' buffers and coroutines, allocator rounding.
SLACK = 32 * MIB
HANG = 120.0  # seconds a login may take before it counts as hung


def add_users(env: dict[str, str]) -> list[tuple[str, str]]:
    """USERS accounts in the process's (SQLite) database, hashed with its parameters."""
    settings = Settings(
        ALCHEMIST_DATA_DIR=Path(env["ALCHEMIST_DATA_DIR"]),
        ARGON2_MEMORY_KIB=int(env["ARGON2_MEMORY_KIB"]),
        ARGON2_TIME_COST=int(env["ARGON2_TIME_COST"]),
        ARGON2_PARALLELISM=int(env["ARGON2_PARALLELISM"]),
    )
    engine = build_engine(settings.database_url)
    upgrade(engine)
    vault = PasswordVault.from_settings(settings)
    accounts = [(f"burst{i}@example.com", f"burst password {i}") for i in range(USERS)]
    with transaction(sessionmaker(engine)) as session:
        for email, password in accounts:
            add_user(session, vault, email, password)
    engine.dispose()
    return accounts


def burst(url: str, accounts: list[tuple[str, str]]) -> list[httpx.Response]:
    """LOGINS logins released at once; every answer (a login that raises fails the test)."""
    start = threading.Barrier(LOGINS)
    answers: list[httpx.Response] = []
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            with httpx.Client(timeout=HANG) as client:
                start.wait()
                answers.append(client.post(f"{url}/login", auth=accounts[index % len(accounts)]))
        except BaseException as exc:  # a timeout is a hang: report it, whatever it is
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(LOGINS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG + 10)
    assert not errors, errors[:3]
    assert not any(thread.is_alive() for thread in threads), "a login hung"
    return answers


def rss_peak_during(process: psutil.Process, work: threading.Thread) -> int:
    """The highest RSS of `process` seen while `work` runs (sampled every millisecond or so)."""
    peak = process.memory_info().rss
    work.start()
    while work.is_alive():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.001)
    return max(peak, process.memory_info().rss)


@pytest.mark.parametrize(
    ("concurrency", "memory_kib", "time_cost", "parallelism"),
    [
        (2, 65_536, 3, 4),  # argon2-cffi's defaults (this project's), two at once
        (1, 19_456, 2, 1),  # OWASP's minimum, one at a time
        (3, 32_768, 2, 2),
    ],
)
def test_concurrent_logins_stay_within_the_hashing_memory_bound(
    embedded_env: dict[str, str],
    tmp_path: Path,
    concurrency: int,
    memory_kib: int,
    time_cost: int,
    parallelism: int,
) -> None:
    env = {
        **embedded_env,
        "LOGIN_CONCURRENCY": str(concurrency),
        "ARGON2_MEMORY_KIB": str(memory_kib),
        "ARGON2_TIME_COST": str(time_cost),
        "ARGON2_PARALLELISM": str(parallelism),
    }
    hashing = concurrency * memory_kib * 1024
    # The bound means something: without it, the burst would need LOGINS hashes' memory at once.
    assert hashing + SLACK < LOGINS * memory_kib * 1024 / 4
    accounts = add_users(env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["auth", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, env, f"{url}/healthz", tmp_path / "auth.log") as server:
        process = psutil.Process(server.pid)
        for account in accounts[:concurrency]:  # warm: imports, pools, the hashing threads' arenas
            assert httpx.post(f"{url}/login", auth=account, timeout=HANG).status_code == 200
        baseline = process.memory_info().rss
        answers: list[httpx.Response] = []
        work = threading.Thread(target=lambda: answers.extend(burst(url, accounts)))
        peak = rss_peak_during(process, work)
    statuses = collections.Counter(answer.status_code for answer in answers)
    print(
        f"\n{LOGINS} logins, LOGIN_CONCURRENCY={concurrency}, {memory_kib} KiB: {dict(statuses)}; "
        f"RSS idle {baseline / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, "
        f"bound {(baseline + hashing + SLACK) / MIB:.0f} MiB"
    )
    assert sum(statuses.values()) == LOGINS
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= 1
    for answer in answers:
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) >= 1
            assert "try again" in answer.json()["detail"]
        else:
            assert answer.text.count(".") == 2  # a JWT
    assert peak <= baseline + hashing + SLACK, (peak / MIB, baseline / MIB)
