"""Login hardening against real auth servers on real sockets, on SQLite and on the real MariaDB.

The failed-login limiter is shared by every replica (its counts live in the database), counts
an attempt before the password is checked, keys on the canonical account, limits per
(account, client address) and per address, and believes X-Forwarded-For only from trusted
proxies. Time is the test's clock (the limiter's), never a sleep.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from argon2 import PasswordHasher, extract_parameters
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from alchemist.auth.app import create_app
from alchemist.auth.passwords import PasswordVault
from alchemist.auth.users import UserExistsError, add_user, find_user
from alchemist.config import Settings
from alchemist.db.engine import build_engine, transaction
from alchemist.db.migrate import upgrade
from alchemist.db.models import User
from tests.integration.conftest import Clock, configured, gateway

# OWASP's minimum argon2 parameters keep these runs short; the limits are the subject here.
FAST = {"ARGON2_MEMORY_KIB": 19_456, "ARGON2_TIME_COST": 2, "ARGON2_PARALLELISM": 1}
WINDOW = 300  # seconds; windows end when the test moves the clock, never by themselves
VICTIM = ("victim@example.com", "victim-password-1")
ACCENTED = ("v\u00edctim@example.com", "accented-password-1")  # another account: víctim
OWNER_AT, STRANGER_AT = "198.51.100.20", "203.0.113.7"

HttpServer = Callable[[object], AbstractContextManager[str]]


class CountingVault(PasswordVault):
    """A real vault that also counts the argon2 checks made against each stored hash."""

    def __init__(self, hasher: PasswordHasher | None = None, concurrency: int | None = None) -> None:
        super().__init__(hasher, concurrency)
        self.checks: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()

    def _matches(self, stored: str, password: str) -> bool:
        with self._count_lock:
            self.checks[stored] += 1
        return super()._matches(stored, password)


@dataclass
class Auth:
    """Auth replicas over one database, the vault they share and the limiter's clock."""

    urls: list[str]
    settings: Settings
    vault: CountingVault
    clock: Clock
    hashes: dict[str, str] = field(default_factory=dict)

    def login(
        self,
        user: tuple[str, str],
        *,
        replica: int = 0,
        client: str | None = None,
        password: str | None = None,
    ) -> httpx.Response:
        """POST /login as `user` (with another password if given), from `client` via X-Forwarded-For."""
        headers = {"X-Forwarded-For": client} if client else {}
        return httpx.post(
            f"{self.urls[replica]}/login",
            auth=(user[0], user[1] if password is None else password),
            headers=headers,
            timeout=60,
        )

    def fail(self, user: tuple[str, str], times: int, **where: object) -> None:
        """Guess wrong `times` times; each must be a plain 401 (not yet limited)."""
        for _ in range(times):
            answer = self.login(user, password="wrong guess", **where)  # type: ignore[arg-type]
            assert answer.status_code == 401, answer.text


@contextmanager
def auth_servers(
    settings: Settings, http_server: HttpServer, clock: Clock, replicas: int = 1, **changes: object
) -> Iterator[Auth]:
    """`replicas` auth apps, each on its own socket, over the test's database, with the victim added."""
    settings = configured(settings, LOGIN_FAILURE_WINDOW_SECONDS=WINDOW, **{**FAST, **changes})
    vault = CountingVault.from_settings(settings)
    assert isinstance(vault, CountingVault)
    clock.pin()
    with ExitStack() as stack:
        urls = [
            stack.enter_context(http_server(create_app(settings, vault=vault, clock=clock)))
            for _ in range(replicas)
        ]
        auth = Auth(urls, settings, vault, clock)
        engine = build_engine(settings.database_url)
        with transaction(sessionmaker(engine)) as session:
            for email, password in (VICTIM, ACCENTED):
                auth.hashes[email] = add_user(session, vault, email, password).password_hash
        engine.dispose()
        yield auth


def test_the_counts_are_shared_by_every_replica(
    settings: Settings, http_server: HttpServer, clock: Clock
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    with auth_servers(settings, http_server, clock, replicas=3) as auth:
        for index in range(limit):  # round robin, as a load balancer would spread them
            auth.fail(VICTIM, 1, replica=index % 3)
        for replica in range(3):
            blocked = auth.login(VICTIM, replica=replica)
            assert blocked.status_code == 429, (replica, blocked.text)
            assert 1 <= int(blocked.headers["retry-after"]) <= WINDOW
        clock.advance(WINDOW)
        assert [auth.login(VICTIM, replica=r).status_code for r in range(3)] == [200, 200, 200]


@pytest.mark.parametrize(("guesses", "known"), [(12, True), (30, True), (20, False)])
def test_parallel_guesses_get_at_most_the_limit_of_password_checks(
    settings: Settings, http_server: HttpServer, clock: Clock, guesses: int, known: bool
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    target = VICTIM if known else ("nobody@example.com", "")
    with auth_servers(settings, http_server, clock, replicas=2, LOGIN_CONCURRENCY=4) as auth:
        stored = auth.hashes[VICTIM[0]] if known else auth.vault.decoy_hash
        before = auth.vault.checks[stored]
        start = threading.Barrier(guesses)
        statuses: list[int] = []

        def guess(index: int) -> None:
            start.wait()
            statuses.append(auth.login(target, password=f"guess {index}", replica=index % 2).status_code)

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(guesses)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        counted = collections.Counter(statuses)
        assert sum(counted.values()) == guesses
        assert set(counted) <= {401, 429}, counted
        assert counted[401] == limit, counted  # exactly the limit got an answer, the rest waited
        assert auth.vault.checks[stored] - before == limit
        assert auth.login(VICTIM if known else target).status_code == 429


@pytest.mark.parametrize(
    "spellings",
    [
        ["VICTIM@EXAMPLE.COM", " victim@example.com ", "Victim@Example.Com"],
        [
            "\uff56\uff49\uff43\uff54\uff49\uff4d@example.com",
            "\uff36\uff29\uff23\uff34\uff29\uff2d\uff20example.com",
        ],
        ["\u00a0victim@example.com", "victim@EXAMPLE.com\u3000", "VICTIM@example.com"],
    ],
)
def test_every_spelling_of_an_account_shares_its_count(
    settings: Settings, http_server: HttpServer, clock: Clock, spellings: list[str]
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    with auth_servers(settings, http_server, clock) as auth:
        for index in range(limit):
            auth.fail((spellings[index % len(spellings)], ""), 1)
        for spelling in [VICTIM[0], *spellings]:
            assert auth.login((spelling, VICTIM[1])).status_code == 429, spelling
        clock.advance(WINDOW)
        for spelling in spellings:  # and each spelling logs into the one account
            answer = auth.login((spelling, VICTIM[1]))
            assert answer.status_code == 200, spelling
            claims = httpx.post(
                f"{auth.urls[0]}/validate", headers={"Authorization": f"Bearer {answer.text}"}
            ).json()
            assert claims["username"] == VICTIM[0]


@pytest.mark.parametrize(
    "other",
    [
        "v\u00edctim@example.com",  # víctim, precomposed
        "vi\u0301ctim@EXAMPLE.com",  # víctim, decomposed: the same account as the precomposed one
        "v\u0131ctim@example.com",  # dotless i
        "v\u0456ctim@example.com",  # Cyrillic i
        "victim@exampl\u00e9.com",
    ],
)
def test_an_accented_spelling_is_another_account_and_never_the_victims(
    settings: Settings, http_server: HttpServer, clock: Clock, other: str
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    with auth_servers(settings, http_server, clock) as auth:
        auth.fail(VICTIM, limit)
        assert auth.login(VICTIM).status_code == 429
        # The victim's password under a look-alike name is a failure of that name, not a way in.
        assert auth.login((other, VICTIM[1])).status_code == 401
        clock.advance(WINDOW)
        auth.fail((other, ""), limit - 1)  # the look-alike's failures are its own
        assert auth.login(VICTIM).status_code == 200
        if other.startswith(("vi\u0301", "v\u00ed")):  # víctim's own account, with its own password
            assert auth.login((other, ACCENTED[1])).status_code == 200


def test_accounts_differing_by_an_accent_or_case_are_stored_and_found_exactly(settings: Settings) -> None:
    engine = build_engine(settings.database_url)
    upgrade(engine)
    sessions = sessionmaker(engine)
    vault = PasswordVault.from_settings(configured(settings, **FAST))
    try:
        with transaction(sessions) as session:
            add_user(session, vault, "victim@example.com", "victim-password-1")
            add_user(session, vault, "v\u00edctim@example.com", "accented-password-1")  # not a duplicate
        with pytest.raises(UserExistsError), transaction(sessions) as session:
            add_user(session, vault, "VI\u0301CTIM@example.com", "another-password-1")  # víctim again
        with transaction(sessions) as session:
            found = {
                spelling: getattr(find_user(session, spelling), "email", None)
                for spelling in ("VICTIM@example.com", "V\u00cdCTIM@example.com", "vi\u0303ctim@example.com")
            }
            stored = list(session.scalars(select(User.email).order_by(User.id)))
    finally:
        engine.dispose()
    assert found == {
        "VICTIM@example.com": "victim@example.com",
        "V\u00cdCTIM@example.com": "v\u00edctim@example.com",
        "vi\u0303ctim@example.com": None,  # ĩ matches neither (MariaDB's default collation would)
    }
    assert stored == ["victim@example.com", "v\u00edctim@example.com"]


@pytest.mark.parametrize(
    ("stranger", "owner"),
    [
        (STRANGER_AT, OWNER_AT),
        ("2001:db8:1::7", "2001:db8:2::20"),
        ("203.0.113.7", "2001:db8::20"),
        ("::ffff:203.0.113.7", "198.51.100.21"),
    ],
)
def test_a_strangers_guesses_never_lock_the_owner_out(
    settings: Settings, http_server: HttpServer, clock: Clock, stranger: str, owner: str
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    with auth_servers(settings, http_server, clock) as auth:
        auth.fail(VICTIM, limit, client=stranger)
        assert auth.login(VICTIM, client=stranger).status_code == 429  # even with the right password
        assert auth.login(VICTIM, client=owner).status_code == 200
        auth.fail(VICTIM, limit - 1, client=owner)  # the owner's own count is untouched by the stranger's
        assert auth.login(VICTIM, client=owner).status_code == 200


def test_one_ipv6_slash_64_counts_as_one_address(
    settings: Settings, http_server: HttpServer, clock: Clock
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    with auth_servers(settings, http_server, clock) as auth:
        auth.fail(VICTIM, limit, client="2001:db8:1:2::7")
        assert auth.login(VICTIM, client="2001:db8:1:2:ffff::1").status_code == 429  # at most slowed
        assert auth.login(VICTIM, client="2001:db8:1:3::1").status_code == 200


def test_an_address_guessing_across_accounts_is_stopped(
    settings: Settings, http_server: HttpServer, clock: Clock
) -> None:
    with auth_servers(settings, http_server, clock, LOGIN_MAX_FAILURES_PER_ADDRESS=4) as auth:
        for index in range(4):
            auth.fail((f"user{index}@example.com", ""), 1, client=STRANGER_AT)
        assert auth.login(VICTIM, client=STRANGER_AT).status_code == 429  # an account it never tried
        assert auth.login(VICTIM, client=OWNER_AT).status_code == 200
        clock.advance(WINDOW)
        assert auth.login(VICTIM, client=STRANGER_AT).status_code == 200


@pytest.mark.parametrize("trusted", ["10.0.0.0/8", "", "192.0.2.1, 2001:db8::/32"])
def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    settings: Settings, http_server: HttpServer, clock: Clock, trusted: str
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    spoofs = ["203.0.113.1", "203.0.113.2, 10.0.0.1", "2001:db8::9", "garbage"]
    with auth_servers(settings, http_server, clock, TRUSTED_PROXIES=trusted) as auth:
        for index in range(limit):  # a new made-up address every time: all are the loopback peer
            auth.fail(VICTIM, 1, client=spoofs[index % len(spoofs)])
        assert auth.login(VICTIM, client=OWNER_AT).status_code == 429
        assert auth.login(VICTIM).status_code == 429


def test_x_forwarded_for_from_a_trusted_proxy_names_the_rightmost_untrusted_hop(
    settings: Settings, http_server: HttpServer, clock: Clock
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    with auth_servers(settings, http_server, clock, TRUSTED_PROXIES="127.0.0.0/8,10.0.0.0/8") as auth:
        # The client writes anything on the left; the proxies append what they saw.
        prefixes = ["198.51.100.1", "198.51.100.2, 198.51.100.3", "unknown"]
        for index in range(limit):
            auth.fail(VICTIM, 1, client=f"{prefixes[index % len(prefixes)]}, {STRANGER_AT}, 10.0.0.5")
        assert auth.login(VICTIM, client=STRANGER_AT).status_code == 429
        assert auth.login(VICTIM, client=f"{STRANGER_AT}, 10.9.9.9").status_code == 429
        assert auth.login(VICTIM, client="198.51.100.1").status_code == 200


@pytest.mark.parametrize(("gateway_trusts", "owner_locked"), [("127.0.0.0/8", False), ("10.0.0.0/8", True)])
async def test_the_gateway_forwards_the_client_it_trusts(
    settings: Settings, http_server: HttpServer, clock: Clock, gateway_trusts: str, owner_locked: bool
) -> None:
    limit = settings.LOGIN_MAX_FAILURES
    with auth_servers(settings, http_server, clock) as auth:
        front = configured(settings, AUTH_SVC_ADDRESS=auth.urls[0], TRUSTED_PROXIES=gateway_trusts)
        async with gateway(front) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
            for _ in range(limit):
                wrong = await client.post(
                    "/login", auth=(VICTIM[0], "wrong guess"), headers={"X-Forwarded-For": STRANGER_AT}
                )
                assert wrong.status_code == 401
            stranger = await client.post("/login", auth=VICTIM, headers={"X-Forwarded-For": STRANGER_AT})
            assert stranger.status_code == 429 and int(stranger.headers["retry-after"]) >= 1
            owner = await client.post("/login", auth=VICTIM, headers={"X-Forwarded-For": OWNER_AT})
            session = await client.post(
                "/api/v1/session",
                json={"email": VICTIM[0], "password": VICTIM[1]},
                headers={"X-Forwarded-For": OWNER_AT},
            )
    # Trusted, the gateway names the stranger to auth; untrusted, everyone is the loopback peer.
    assert (owner.status_code, session.status_code) == ((429, 429) if owner_locked else (200, 200))


def test_a_hash_made_with_old_parameters_verifies_and_is_renewed(
    settings: Settings, http_server: HttpServer, clock: Clock
) -> None:
    old = PasswordVault(PasswordHasher(memory_cost=8192, time_cost=1, parallelism=2))
    with auth_servers(settings, http_server, clock) as auth:
        engine = build_engine(settings.database_url)
        sessions = sessionmaker(engine)
        with transaction(sessions) as session:
            add_user(session, old, "old@example.com", "old-password-1")
        assert auth.login(("old@example.com", "old-password-1")).status_code == 200
        with transaction(sessions) as session:
            renewed = session.scalar(select(User.password_hash).where(User.email == "old@example.com"))
        engine.dispose()
        assert renewed is not None
        parameters = extract_parameters(renewed)
        assert (parameters.memory_cost, parameters.time_cost, parameters.parallelism) == (19_456, 2, 1)
        assert auth.login(("old@example.com", "old-password-1")).status_code == 200
        assert auth.login(("old@example.com", "wrong-password-1")).status_code == 401
