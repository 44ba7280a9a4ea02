"""For operators and orchestrators: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from alchemist.gateway.deps import StateDep
from alchemist.gateway.schemas import Features, Health
from alchemist.health import readiness_response
from alchemist.telemetry import metrics_response

router = APIRouter(tags=["operations"])
# Served on the public port unless METRICS_PORT moves it where the Ingress does not route.
metrics_router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/api/v1/features")
async def features(state: StateDep) -> Features:
    """What this server offers: API docs, webhooks (no credentials needed)."""
    settings = state.settings
    return Features(api_docs=settings.API_DOCS, webhooks=settings.webhook_key() is not None)


@router.get(
    "/readyz",
    response_class=JSONResponse,
    responses={
        200: {"description": "Every backend answers"},
        503: {"description": "A backend does not answer"},
    },
)
async def readyz(state: StateDep) -> JSONResponse:
    """Database, storage and broker are reachable (each one's state in the body)."""
    return await readiness_response(state.backends)


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text",
        }
    },
)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics: requests here, jobs by status, conversion time, queue lag."""
    return await metrics_response(state.telemetry.registry)
