"""Liveness and readiness: one check of every backend, shared by the gateway and the workers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from alchemist.headers import HardeningHeaders
from alchemist.telemetry import metrics_response
from alchemist.wiring import Backends

logger = logging.getLogger(__name__)


async def readiness(backends: Backends) -> tuple[bool, dict[str, str]]:
    """Whether database, both blob stores and the broker answer, and what each said."""

    def database() -> None:
        with backends.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def in_thread(check: Callable[[], None]) -> None:
        await run_in_threadpool(check)

    probes: dict[str, Callable[[], Awaitable[None]]] = {
        "database": lambda: in_thread(database),
        "videos": lambda: in_thread(backends.videos.ping),
        "mp3s": lambda: in_thread(backends.mp3s.ping),
        "broker": backends.broker.ping,
    }
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which, not the driver's words
            logger.warning("readiness: %s unavailable: %s", name, exc)
            checks[name] = "unavailable"
    return all(value == "ok" for value in checks.values()), checks


async def readiness_response(backends: Backends) -> JSONResponse:
    """200 with each check when ready, else 503."""
    ready, checks = await readiness(backends)
    return JSONResponse({"status": "ok" if ready else "unavailable", **checks}, 200 if ready else 503)


def create_health_app(backends: Backends, registry: CollectorRegistry | None = None) -> FastAPI:
    """/healthz, /readyz and /metrics for a worker that serves nothing else (probes need a port)."""
    app = FastAPI(title="Audio Alchemist worker health", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(HardeningHeaders)

    @app.get("/metrics")
    async def metrics() -> Response:
        return await metrics_response(registry or CollectorRegistry())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return await readiness_response(backends)

    return app
