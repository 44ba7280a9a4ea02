from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

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
