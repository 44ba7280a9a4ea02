"""Fixtures shared by every test layer: settings, databases and servers on real sockets."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pymysql
import pytest
import uvicorn
from sqlalchemy.engine import URL

from alchemist.config import Settings

TEST_JWT_SECRET = "test-secret-" + "x" * 40
MARIADB = {"host": os.environ.get("TEST_MYSQL_HOST", "127.0.0.1"), "port": 3306, "user": "root"}


def services_required() -> bool:
    """In CI (ALCHEMIST_REQUIRE_SERVICES=1) a missing backend fails instead of skipping."""
    return os.environ.get("ALCHEMIST_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip with the reason, or fail when the services are required."""
    if services_required():
        pytest.fail(f"{reason} (ALCHEMIST_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mariadb_root() -> dict[str, object]:
    """Connection arguments for the MariaDB server on this machine."""
    try:
        pymysql.connect(**MARIADB, connect_timeout=3).close()  # type: ignore[arg-type]
    except pymysql.MySQLError as exc:
        unavailable(f"MariaDB not reachable at {MARIADB['host']}:{MARIADB['port']}: {exc}")
    return MARIADB


@contextmanager
def scratch_mariadb_database(root: dict[str, object]) -> Iterator[URL]:
    """A new empty database, dropped afterwards."""
    name = f"alchemist_test_{secrets.token_hex(4)}"
    connection = pymysql.connect(**root, autocommit=True)  # type: ignore[arg-type]
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield URL.create(
            "mysql+pymysql",
            username=str(root["user"]),
            host=str(root["host"]),
            port=int(root["port"]),  # type: ignore[call-overload]
            database=name,
            query={"charset": "utf8mb4"},
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        connection.close()


@pytest.fixture
def mariadb_database(mariadb_root: dict[str, object]) -> Iterator[URL]:
    """A scratch database on the real MariaDB, dropped afterwards."""
    with scratch_mariadb_database(mariadb_root) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database: SQLite in a temp dir, then a scratch MariaDB database."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'alchemist.db'}"
        return
    root = request.getfixturevalue("mariadb_root")
    with scratch_mariadb_database(root) as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for a test: the parametrised database, a temp data dir, a fixed secret."""
    return Settings(
        DATABASE_URL=database_url,
        ALCHEMIST_DATA_DIR=tmp_path / "data",
        ALCHEMIST_MIGRATE_ON_START=True,
        JWT_SECRET=TEST_JWT_SECRET,  # type: ignore[arg-type]
        LOGIN_MAX_FAILURES=3,
        LOGIN_FAILURE_WINDOW_SECONDS=2,
    )


@contextmanager
def serve_in_thread(app: object) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # As the CLI runs them: the apps' own TrustedProxyHeaders, not uvicorn's, judge X-Forwarded-For.
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level="warning",
        lifespan="on",
        server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def http_server() -> Callable[[object], object]:
    """A factory of servers on real sockets (a context manager per app)."""
    return serve_in_thread


CONFIG_VARIABLES = [name for name in Settings.model_fields if name.isupper() and name != "ALCHEMIST_DATA_DIR"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see only the configuration they set: none leaks in from the machine."""
    for name in CONFIG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALCHEMIST_DATA_DIR", str(tmp_path / "env-data"))
