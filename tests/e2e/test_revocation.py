"""Revocation at the gateway within seconds, against real processes: `alchemist up` (SQLite) and
auth + gateway as separate processes on MariaDB and RabbitMQ.

A removed user, a reset password (admin API or `alchemist users passwd`) and a signed-out
session each stop the old token or cookie, at the gateway and at auth's /validate. The
gateway checks tokens locally through a cache of REVOCATION_CACHE_SECONDS (1 s here); each
check polls with a bound on a hang, never a sleep that asserts timing.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import jwt
import pytest

from tests.conftest import scratch_mariadb_database
from tests.e2e.conftest import alchemist, delete_queues, free_port, rabbitmq_reachable, running

HANG = 30.0  # seconds a revocation may take before the test calls it a hang (the cache holds 1 s)
SETTINGS = {
    "REVOCATION_CACHE_SECONDS": "1",
    # OWASP's minimum argon2 parameters keep the many logins here quick.
    "ARGON2_MEMORY_KIB": "19456",
    "ARGON2_TIME_COST": "2",
    "ARGON2_PARALLELISM": "1",
}
PASSWORD = "revocation-password-1"
ADMIN = "admin@alchemist.local"


@dataclass
class Stack:
    """A running gateway (and auth, when apart), the admin's token and what the CLI needs."""

    kind: str
    url: str
    auth_url: str | None
    env: dict[str, str]
    secret: str
    admin_token: str

    def admin(self) -> dict[str, str]:
        """The admin's Authorization header."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def new_user(self) -> str:
        """A fresh account (through the gateway's admin API) with PASSWORD."""
        email = f"user-{secrets.token_hex(4)}@example.com"
        made = httpx.post(
            f"{self.url}/api/v1/users", json={"email": email, "password": PASSWORD}, headers=self.admin()
        )
        assert made.status_code == 201, made.text
        return email


def login(url: str, email: str, password: str = PASSWORD) -> str:
    """A JWT from POST /login."""
    answer = httpx.post(f"{url}/login", auth=(email, password), timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.text.strip()


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "JWT_", "SMTP_", "AMQP"))}
    return {**env, **SETTINGS, "ALCHEMIST_DATA_DIR": str(tmp / "data")}


def up_stack(tmp: Path) -> Iterator[Stack]:
    """`alchemist up`: every service in one process, on SQLite."""
    env = base_env(tmp)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(["up", "--host", "127.0.0.1", "--port", str(port)], env, f"{url}/readyz", tmp / "up.log"):
        password = (tmp / "up.log").read_text().split("with password ")[1].split()[0]
        secret = (tmp / "data" / "jwt_secret").read_text().strip()
        yield Stack("up", url, None, env, secret, login(url, ADMIN, password))


def distributed_stack(tmp: Path, root: dict[str, object]) -> Iterator[Stack]:
    """auth and gateway as separate processes on a scratch MariaDB database and RabbitMQ."""
    rabbitmq_reachable()
    run = secrets.token_hex(4)
    amqp = "amqp://guest:guest@127.0.0.1:5672/"
    with scratch_mariadb_database(root) as database:
        auth_port, gateway_port = free_port(), free_port()
        env = {
            **base_env(tmp),
            "MYSQL_HOST": str(database.host), "MYSQL_PORT": str(database.port),
            "MYSQL_USER": str(database.username), "MYSQL_DB": str(database.database),
            "JWT_SECRET": "revocation-" + secrets.token_hex(24), "AMQP_URL": amqp,
            "VIDEO_QUEUE": f"revocation.{run}.video", "MP3_QUEUE": f"revocation.{run}.mp3",
            "AUTH_SVC_ADDRESS": f"127.0.0.1:{auth_port}",
        }  # fmt: skip
        assert alchemist("migrate", env=env).returncode == 0
        added = alchemist(
            "users", "add", ADMIN, "--admin", "--password-stdin", env=env, stdin=PASSWORD + "\n"
        )
        assert added.returncode == 0, added.stderr
        auth_url, url = f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{gateway_port}"
        try:
            auth_args = ["auth", "--host", "127.0.0.1", "--port", str(auth_port)]
            gateway_args = ["gateway", "--host", "127.0.0.1", "--port", str(gateway_port)]
            with (
                running(auth_args, env, f"{auth_url}/healthz", tmp / "auth.log"),
                running(gateway_args, env, f"{url}/healthz", tmp / "gateway.log"),
            ):
                yield Stack("distributed", url, auth_url, env, env["JWT_SECRET"], login(url, ADMIN))
        finally:
            delete_queues(amqp, env["VIDEO_QUEUE"], env["MP3_QUEUE"])


@pytest.fixture(scope="module", params=["up", pytest.param("distributed", marks=pytest.mark.mariadb)])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack per kind for the whole module."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "up":
        yield from up_stack(tmp)
    else:
        yield from distributed_stack(tmp, request.getfixturevalue("mariadb_root"))


def bearer_status(stack: Stack, token: str) -> int:
    """What the gateway answers a Bearer token on a route that needs one."""
    return httpx.get(f"{stack.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code


def cookie_status(stack: Stack, cookie: str) -> int:
    """What the gateway answers a browser holding this session cookie."""
    with httpx.Client(base_url=stack.url, cookies={"alchemist_session": cookie}) as browser:
        return browser.get("/api/v1/jobs").status_code


def validate_status(stack: Stack, token: str) -> int | None:
    """What auth's own /validate answers (None when auth is not a process of its own)."""
    if stack.auth_url is None:
        return None
    return httpx.post(f"{stack.auth_url}/validate", headers={"Authorization": f"Bearer {token}"}).status_code


def sign_in(stack: Stack, email: str, password: str = PASSWORD) -> tuple[str, str]:
    """A session cookie and its CSRF token, from the page's sign-in."""
    answer = httpx.post(f"{stack.url}/api/v1/session", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return answer.cookies["alchemist_session"], str(answer.json()["csrf_token"])


def refused_soon(check: Callable[[], int | None], refused: int) -> None:
    """Poll until check() answers `refused`; HANG is a bound on a hang, not a timing assertion."""
    deadline = time.monotonic() + HANG
    while (status := check()) != refused:
        assert status == 200, status  # nothing in between: it works until it is refused
        if time.monotonic() > deadline:
            raise AssertionError(f"still {status} after {HANG} s: the revocation never reached this check")
        time.sleep(0.05)


def assert_revoked(stack: Stack, token: str, cookie: str) -> None:
    """The token gets 403 and the cookie 401 at the gateway, the token 403 at auth."""
    refused_soon(lambda: bearer_status(stack, token), 403)
    refused_soon(lambda: cookie_status(stack, cookie), 401)
    if stack.auth_url is not None:
        assert validate_status(stack, token) == 403  # auth answers from the database, uncached


def assert_working(stack: Stack, token: str, cookie: str) -> None:
    assert bearer_status(stack, token) == 200
    assert cookie_status(stack, cookie) == 200
    assert validate_status(stack, token) in (None, 200)


@pytest.mark.parametrize("how", ["api", "cli"])
def test_a_removed_users_token_and_cookie_stop_working(stack: Stack, how: str) -> None:
    email = stack.new_user()
    token, (cookie, _) = login(stack.url, email), sign_in(stack, email)
    assert_working(stack, token, cookie)
    if how == "api":
        removed = httpx.delete(f"{stack.url}/api/v1/users/{quote(email, safe='')}", headers=stack.admin())
        assert removed.status_code == 204, removed.text
    else:
        done = alchemist("users", "remove", email, env=stack.env)
        assert done.returncode == 0, done.stderr
    assert_revoked(stack, token, cookie)
    # Added again under the same email, the account is a new one: the old token stays dead.
    made = httpx.post(
        f"{stack.url}/api/v1/users", json={"email": email, "password": PASSWORD}, headers=stack.admin()
    )
    assert made.status_code == 201
    assert bearer_status(stack, token) == 403
    assert bearer_status(stack, login(stack.url, email)) == 200


@pytest.mark.parametrize("how", ["api", "cli"])
def test_a_password_reset_revokes_every_earlier_token(stack: Stack, how: str) -> None:
    email = stack.new_user()
    tokens = [login(stack.url, email), login(stack.url, email)]
    cookie, _ = sign_in(stack, email)
    for token in tokens:
        assert_working(stack, token, cookie)
    new_password = "a brand new password"
    if how == "api":
        path = f"{stack.url}/api/v1/users/{quote(email, safe='')}/password"
        reset = httpx.put(path, json={"password": new_password}, headers=stack.admin())
        assert reset.status_code == 204, reset.text
    else:
        done = alchemist(
            "users", "passwd", email, "--password-stdin", env=stack.env, stdin=new_password + "\n"
        )
        assert done.returncode == 0, done.stderr
    for token in tokens:
        assert_revoked(stack, token, cookie)
    fresh = login(stack.url, email, new_password)
    fresh_cookie, _ = sign_in(stack, email, new_password)
    assert_working(stack, fresh, fresh_cookie)


def test_signing_out_revokes_that_session_everywhere_and_only_that_one(stack: Stack) -> None:
    email = stack.new_user()
    cookie, csrf = sign_in(stack, email)
    other_cookie, _ = sign_in(stack, email)  # the same user in a second browser
    token = login(stack.url, email)
    assert cookie_status(stack, cookie) == 200
    with httpx.Client(base_url=stack.url, cookies={"alchemist_session": cookie}) as browser:
        out = browser.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204, out.text
    # A copy of the cookie (kept by an attacker, or another tab) no longer works anywhere.
    refused_soon(lambda: cookie_status(stack, cookie), 401)
    if stack.auth_url is not None:  # the same JWT as a Bearer token at auth: revoked there too
        assert validate_status(stack, cookie) == 403
    assert bearer_status(stack, cookie) == 403
    assert cookie_status(stack, other_cookie) == 200
    assert bearer_status(stack, token) == 200
    with httpx.Client(base_url=stack.url, cookies={"alchemist_session": cookie}) as browser:
        again = browser.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
        assert again.status_code == 204  # an ended session simply ends


def test_a_token_from_before_versions_counts_as_version_0(stack: Stack) -> None:
    email = stack.new_user()
    claims = jwt.decode(login(stack.url, email), options={"verify_signature": False})
    assert claims["ver"] == 0
    del claims["ver"]
    older = jwt.encode({**claims, "jti": secrets.token_hex(16)}, stack.secret, "HS256")
    cookie, _ = sign_in(stack, email)
    assert_working(stack, older, cookie)
    reset = httpx.put(
        f"{stack.url}/api/v1/users/{quote(email, safe='')}/password",
        json={"password": "yet another password"},
        headers=stack.admin(),
    )
    assert reset.status_code == 204
    assert_revoked(stack, older, cookie)
