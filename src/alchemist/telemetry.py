"""Prometheus metrics of one process: counters bumped as events happen, histograms of latency.

Counters only go up (a deleted job does not un-count its conversion); job counts by status
and queue lag are gauges read from the shared database at each scrape (gateway only).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alchemist.headers import HardeningHeaders

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONVERSION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Telemetry:
    """One registry per process (shared by every service inside `alchemist up`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "alchemist_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "alchemist_http_request_duration_seconds", "Time to answer an HTTP request (to the last byte)",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.conversions = Counter(
            "alchemist_conversions", "Conversions that ended", ["status"], registry=self.registry
        )
        self.conversion_seconds = Counter(
            "alchemist_conversion_seconds",
            "Wall seconds spent on conversions that succeeded",
            registry=self.registry,
        )
        self.conversion_duration = Histogram(
            "alchemist_conversion_duration_seconds", "Wall time of one successful conversion",
            buckets=CONVERSION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.failures = Counter(
            "alchemist_job_failures", "Jobs that failed, by reason", ["reason"], registry=self.registry
        )
        self.notifications = Counter(
            "alchemist_notifications", "Notification attempts", ["channel", "outcome"], registry=self.registry
        )
        self.outbox_published = Counter(
            "alchemist_outbox_published", "Outbox messages the broker confirmed", registry=self.registry
        )
        self.sweeps = Counter(
            "alchemist_sweeper_actions", "What the sweeper did", ["action"], registry=self.registry
        )


async def metrics_response(registry: CollectorRegistry) -> Response:
    """The registry in Prometheus' text format (collectors may read the database: off the loop)."""
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def create_metrics_app(registry: CollectorRegistry) -> Starlette:
    """/metrics alone, for a port the Ingress does not route (METRICS_PORT)."""

    async def metrics(_request: Request) -> Response:
        return await metrics_response(registry)

    return Starlette(routes=[Route("/metrics", metrics)], middleware=[Middleware(HardeningHeaders)])
