"""What the processes expose: where they listen by default, the API docs switch, and the
hardening headers of the JSON-only apps (auth, the workers' health ports, /metrics).

Where a process listens is read from its own sockets (psutil), not by connecting to this
machine's other addresses: tests send traffic to loopback only.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client import CollectorRegistry

from alchemist.cli.main import build_parser
from alchemist.telemetry import create_metrics_app
from tests.conftest import serve_in_thread
from tests.e2e.conftest import alchemist, delete_queues, free_port, rabbitmq_reachable, running
from tests.media import write_media

JSON_ONLY_CSP = "default-src 'none'"


def listening(pid: int, port: int) -> set[str]:
    """The addresses process `pid` listens on at this port."""
    return {
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def assert_hardened(response: httpx.Response) -> None:
    """nosniff, a CSP that allows nothing, no framing, no Server banner."""
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff", response.url
    assert headers["content-security-policy"].startswith(JSON_ONLY_CSP), response.url
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert "server" not in headers, response.url


def base_env(tmp: Path) -> dict[str, str]:
    """A fresh machine's environment: only a data dir (no database, broker, SMTP or secrets)."""
    prefixes = ("MYSQL_", "JWT_", "SMTP_", "AMQP", "WEBHOOK_", "API_DOCS", "DATABASE_URL", "RABBITMQ_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["ALCHEMIST_DATA_DIR"] = str(tmp / "data")
    return env


def test_every_command_binds_loopback_unless_told() -> None:
    parser = build_parser()
    assert parser.parse_args(["up"]).host == "127.0.0.1"
    assert parser.parse_args(["auth"]).host == parser.parse_args(["gateway"]).host == "127.0.0.1"
    for worker in ("converter", "notification"):
        assert parser.parse_args([worker]).health_host == "127.0.0.1"
        assert parser.parse_args([worker, "--health-host", "0.0.0.0"]).health_host == "0.0.0.0"  # noqa: S104
        assert parser.parse_args([worker, "--host", "::"]).health_host == "::"


@dataclass(frozen=True)
class Quiet:
    """`alchemist up` started with no --host, API_DOCS=false and no WEBHOOK_SECRET."""

    url: str
    port: int
    pid: int
    log: Path
    token: str


@pytest.fixture(scope="module")
def quiet_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quiet]:
    tmp = tmp_path_factory.mktemp("quiet-up")
    port = free_port()
    env = {**base_env(tmp), "API_DOCS": "false"}
    url, log = f"http://127.0.0.1:{port}", tmp / "up.log"
    with running(["up", "--port", str(port)], env, f"{url}/readyz", log) as process:
        password = log.read_text().split("with password ")[1].split()[0]
        token = httpx.post(f"{url}/login", auth=("admin@alchemist.local", password)).text
        yield Quiet(url, port, process.pid, log, token)


def test_up_without_host_listens_on_loopback_only_and_says_how_to_expose_it(quiet_up: Quiet) -> None:
    assert listening(quiet_up.pid, quiet_up.port) == {"127.0.0.1"}
    text = quiet_up.log.read_text()
    assert "Listening on 127.0.0.1 only" in text and "alchemist up --host 0.0.0.0" in text
    assert f"Audio Alchemist is up: http://127.0.0.1:{quiet_up.port}" in text


def test_api_docs_can_be_turned_off(quiet_up: Quiet) -> None:
    for path in ("/docs", "/openapi.json", "/static/swagger/swagger-ui-bundle.js", "/redoc"):
        assert httpx.get(f"{quiet_up.url}{path}").status_code == 404, path
    features = httpx.get(f"{quiet_up.url}/api/v1/features")
    assert features.json() == {"api_docs": False, "webhooks": False}  # the page hides its link
    page = httpx.get(f"{quiet_up.url}/")
    assert page.status_code == 200 and 'id="nav-docs"' in page.text
    script = httpx.get(f"{quiet_up.url}/static/app.js").text
    assert '"/api/v1/features"' in script and "nav-docs" in script


def test_without_a_webhook_secret_webhooks_are_refused_at_upload(quiet_up: Quiet, tmp_path: Path) -> None:
    clip = write_media(tmp_path / "clip.mp4", seconds=1)
    with clip.open("rb") as handle:
        response = httpx.post(
            f"{quiet_up.url}/upload", files={"file": (clip.name, handle, "video/mp4")},
            data={"webhook_url": "https://hooks.example.com/x"},
            headers={"Authorization": f"Bearer {quiet_up.token}"}, timeout=60,
        )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["detail"].startswith("webhooks are not configured on this server")


def test_the_auth_service_sends_hardening_headers_and_no_docs(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(
        ["auth", "--port", str(port)], base_env(tmp_path), f"{url}/healthz", tmp_path / "auth.log"
    ) as auth:
        assert listening(auth.pid, port) == {"127.0.0.1"}
        answers = [
            httpx.get(f"{url}/healthz"),
            httpx.get(f"{url}/readyz"),
            httpx.post(f"{url}/login"),  # 401
            httpx.post(f"{url}/validate", headers={"Authorization": "Bearer a.b.c"}),  # 403
            httpx.get(f"{url}/no-such-route"),  # 404
        ]
        for answer in answers:
            assert_hardened(answer)
        assert [a.status_code for a in answers] == [200, 200, 401, 403, 404]
        assert httpx.get(f"{url}/docs").status_code == 404  # no Swagger page from a CDN here


def test_the_auth_service_hides_its_document_when_docs_are_off(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**base_env(tmp_path), "API_DOCS": "false"}
    with running(["auth", "--port", str(port)], env, f"{url}/healthz", tmp_path / "auth.log"):
        assert httpx.get(f"{url}/openapi.json").status_code == 404


def test_a_worker_health_port_listens_on_loopback_by_default_and_is_hardened(tmp_path: Path) -> None:
    rabbitmq_reachable()
    run = secrets.token_hex(4)
    amqp = "amqp://guest:guest@127.0.0.1:5672/"
    env = {
        **base_env(tmp_path), "AMQP_URL": amqp, "MP3_QUEUE": f"surfaces.{run}.mp3",
        "WEBHOOK_QUEUE": f"surfaces.{run}.webhook", "VIDEO_QUEUE": f"surfaces.{run}.video",
    }  # fmt: skip
    assert alchemist("migrate", env=env).returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        args = ["notification", "--health-port", str(port)]
        with running(args, env, f"{url}/healthz", tmp_path / "notification.log") as worker:
            assert listening(worker.pid, port) == {"127.0.0.1"}
            for path in ("/healthz", "/readyz", "/metrics", "/nothing-here", "/docs", "/openapi.json"):
                answer = httpx.get(f"{url}{path}")
                assert_hardened(answer)
                assert answer.status_code == (200 if path in ("/healthz", "/readyz", "/metrics") else 404), (
                    path
                )
    finally:
        delete_queues(amqp, env["MP3_QUEUE"], env["WEBHOOK_QUEUE"])


def test_the_separate_metrics_port_is_hardened() -> None:
    with serve_in_thread(create_metrics_app(CollectorRegistry())) as url:
        for path in ("/metrics", "/elsewhere"):
            assert_hardened(httpx.get(f"{url}{path}"))
