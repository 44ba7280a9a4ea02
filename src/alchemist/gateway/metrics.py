"""Job figures read from the shared database at each scrape: gauges (they go down as well as up)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from alchemist import jobs, outbox
from alchemist.db.engine import transaction

logger = logging.getLogger(__name__)


class JobCollector(Collector):
    """Jobs by status, queue lag and unsent outbox messages; `alchemist_database_up` says if read."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Read the figures (every process's jobs, since they share the database)."""
        up = GaugeMetricFamily("alchemist_database_up", "Whether the last scrape could read the database")
        try:
            with transaction(self._sessions) as session:
                counts = jobs.status_counts(session)
                oldest = jobs.oldest_queued_at(session)
                unsent = outbox.pending_count(session)
        except Exception as exc:  # an outage is a metric, not a failed scrape
            logger.warning("metrics: database unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_status = GaugeMetricFamily("alchemist_jobs", "Jobs by status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        lag = GaugeMetricFamily(
            "alchemist_queue_lag_seconds", "Age of the oldest job still waiting for a converter"
        )
        waited = 0.0
        if oldest is not None:
            waited = max(0.0, (datetime.now(timezone.utc) - jobs.as_utc(oldest)).total_seconds())  # type: ignore[operator]
        lag.add_metric([], waited)
        yield lag
        pending = GaugeMetricFamily("alchemist_outbox_pending", "Messages committed but not yet published")
        pending.add_metric([], unsent)
        yield pending
