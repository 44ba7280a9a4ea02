from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from alchemist.messaging.rabbitmq import RabbitMQBroker
from tests.conftest import scratch_mariadb_database, unavailable

if TYPE_CHECKING:
    from tests.e2e.stack import Stack

ALCHEMIST = [sys.executable, "-m", "alchemist"]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alchemist(
    *args: str, env: Mapping[str, str], stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `alchemist` command and capture its output."""
    return subprocess.run(
        [*ALCHEMIST, *args],
        input=stdin,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def running(
    args: list[str], env: Mapping[str, str], health_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `alchemist ARGS` as its own process; wait until health_url answers 200."""
    with log.open("wb") as out:
        process = subprocess.Popen([*ALCHEMIST, *args], env=dict(env), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{args} exited {process.returncode}: {log.read_text()}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args} never became healthy: {log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh machine's embedded default: only a data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "JWT_"))}
    env.pop("DATABASE_URL", None)
    env["ALCHEMIST_DATA_DIR"] = str(tmp_path / "alchemist-data")
    return env


@dataclass
class Up:
    """A running `alchemist up`: its URL, the admin's token, its data dir and JWT secret."""

    url: str
    token: str
    data_dir: Path
    jwt_secret: str
    password: str
    webhook_secret: str = ""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`alchemist up` as its own process, one per test module."""
    tmp = tmp_path_factory.mktemp("up")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MYSQL_", "JWT_", "SMTP_", "AMQP", "WEBHOOK_"))
    }
    env["ALCHEMIST_DATA_DIR"] = str(tmp / "data")
    # Webhooks on, and loopback allowed for the tests' receivers (never by default).
    env["WEBHOOK_SECRET"] = webhook_secret = "e2e-webhook-secret-" + secrets.token_hex(16)
    env["WEBHOOK_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    url = f"http://127.0.0.1:{port}"
    with running(["up", "--host", "127.0.0.1", "--port", str(port)], env, f"{url}/readyz", tmp / "up.log"):
        password = (tmp / "up.log").read_text().split("with password ")[1].split()[0]
        token = httpx.post(f"{url}/login", auth=("admin@alchemist.local", password)).text
        secret = (tmp / "data" / "jwt_secret").read_text().strip()
        yield Up(url, token, tmp / "data", secret, password, webhook_secret)


ANN, BOB = ("ann@example.com", "ann-secret-1"), ("bob@example.com", "bob-secret-1")
UPLOAD_LIMIT = 6_000_000


def rabbitmq_reachable() -> None:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as exc:
        unavailable(f"RabbitMQ not reachable at 127.0.0.1:5672: {exc}")


def delete_queues(url: str, *queues: str) -> None:
    async def delete() -> None:
        broker = RabbitMQBroker(url)
        await broker.connect()
        for queue in queues:
            await broker.delete(queue)
        await broker.close()

    asyncio.run(delete())


@pytest.fixture(scope="module")
def distributed(mariadb_root: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """auth, gateway, two converters and notification, each its own process."""
    from tests.e2e.stack import MailCatcher, Stack, start_worker

    rabbitmq_reachable()
    tmp = tmp_path_factory.mktemp("stack")
    mail = MailCatcher()
    mail.controller.start()
    run = secrets.token_hex(4)
    amqp = "amqp://guest:guest@127.0.0.1:5672/"
    with scratch_mariadb_database(mariadb_root) as database:
        auth_port, gateway_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "SMTP_"))},
            "ALCHEMIST_DATA_DIR": str(tmp / "data"),
            "MYSQL_HOST": str(database.host), "MYSQL_PORT": str(database.port),
            "MYSQL_USER": str(database.username), "MYSQL_DB": str(database.database),
            "JWT_SECRET": "e2e-" + secrets.token_hex(24),
            "AMQP_URL": amqp, "VIDEO_QUEUE": f"e2e.{run}.video", "MP3_QUEUE": f"e2e.{run}.mp3",
            "AUTH_SVC_ADDRESS": f"127.0.0.1:{auth_port}",
            "PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port), "SMTP_SECURITY": "none",
            "MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "MAX_ATTEMPTS": "3",
        }  # fmt: skip
        assert alchemist("migrate", env=env).returncode == 0
        for user, password in (ANN, BOB):
            added = alchemist("users", "add", user, "--password-stdin", env=env, stdin=password + "\n")
            assert added.returncode == 0, added.stderr
        stack = Stack(f"http://127.0.0.1:{gateway_port}", env, tmp / "data", mail)
        auth_args = ["auth", "--host", "127.0.0.1", "--port", str(auth_port)]
        gateway_args = ["gateway", "--host", "127.0.0.1", "--port", str(gateway_port)]
        with (
            running(auth_args, env, f"http://127.0.0.1:{auth_port}/healthz", tmp / "auth.log") as auth,
            running(gateway_args, env, f"{stack.url}/healthz", tmp / "gateway.log"),
        ):
            stack.auth_process = auth
            try:
                for name in ("converter-1", "converter-2"):
                    args = ["converter", "--health-port", str(free_port())]
                    stack.workers[name] = start_worker(args, env, tmp / f"{name}.log", "converter consuming")
                args = ["notification", "--health-port", str(free_port())]
                stack.workers["notification"] = start_worker(
                    args, env, tmp / "notification.log", "notification consuming"
                )
                yield stack
            finally:
                for worker in stack.workers.values():
                    worker.process.terminate()
                for worker in stack.workers.values():
                    try:
                        worker.process.wait(30)
                    except subprocess.TimeoutExpired:
                        worker.process.kill()
                delete_queues(amqp, env["VIDEO_QUEUE"], env["MP3_QUEUE"])
                mail.controller.stop()
