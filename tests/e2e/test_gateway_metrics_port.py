"""`alchemist gateway` with METRICS_PORT: /metrics moves off the public port (Kubernetes setup)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import alchemist, free_port, rabbitmq_reachable, running

pytestmark = pytest.mark.rabbitmq


def test_metrics_are_served_only_on_the_metrics_port(tmp_path: Path) -> None:
    rabbitmq_reachable()
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ, "ALCHEMIST_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite+pysqlite:///{tmp_path / 'jobs.db'}", "JWT_SECRET": secrets.token_urlsafe(40),
        "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/", "METRICS_PORT": str(metrics_port),
    }  # fmt: skip
    assert alchemist("migrate", env=env).returncode == 0
    url = f"http://127.0.0.1:{port}"
    with running(
        ["gateway", "--host", "127.0.0.1", "--port", str(port)], env, f"{url}/healthz", tmp_path / "gw.log"
    ):
        assert httpx.get(f"{url}/api/v1/jobs").status_code == 401  # requests to count
        public = httpx.get(f"{url}/metrics")
        assert public.status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert (
            'alchemist_http_requests_total{method="GET",route="/api/v1/jobs",status="401"} 1.0'
            in scraped.text
        )
        assert "alchemist_http_request_duration_seconds_bucket" in scraped.text
        assert "alchemist_database_up 1.0" in scraped.text
        assert "/metrics" not in httpx.get(f"{url}/openapi.json").json()["paths"]
