"""Prometheus metrics: requests here, and job figures read from the shared database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from alchemist import jobs
from alchemist.db.engine import transaction


class JobCollector(Collector):
    """Jobs by status, conversion seconds and queue lag, from the database at each scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Read the figures (every process's jobs, since they share the database)."""
        with transaction(self._sessions) as session:
            counts = jobs.status_counts(session)
            done, seconds = jobs.conversion_totals(session)
            oldest = jobs.oldest_queued_at(session)
        by_status = GaugeMetricFamily("alchemist_jobs", "Jobs by status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        total = CounterMetricFamily(
            "alchemist_conversion_seconds", "Wall seconds spent converting finished jobs"
        )
        total.add_metric([], seconds)
        yield total
        finished = CounterMetricFamily("alchemist_conversions", "Finished conversions")
        finished.add_metric([], done)
        yield finished
        lag = GaugeMetricFamily(
            "alchemist_queue_lag_seconds", "Age of the oldest job still waiting for a converter"
        )
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=timezone.utc)
            lag.add_metric([], max(0.0, (datetime.now(timezone.utc) - oldest).total_seconds()))
        else:
            lag.add_metric([], 0.0)
        yield lag


class GatewayMetrics:
    """This gateway's registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "alchemist_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.started = time.time()

    def watch_jobs(self, sessions: sessionmaker[Session]) -> None:
        """Also report job figures from this database (once the backends are connected)."""
        self.registry.register(JobCollector(sessions))
