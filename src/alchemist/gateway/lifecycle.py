"""Removing a job: its files first, then its record (a failure leaves a record to retry)."""

from __future__ import annotations

from alchemist import jobs
from alchemist.db.engine import transaction
from alchemist.db.models import Job
from alchemist.wiring import Backends


def forget_job(backends: Backends, job: Job) -> None:
    """Delete a job's files, then its record; its download link dies with it."""
    for store, fid in ((backends.mp3s, job.mp3_fid), (backends.mp3s, job.pending_mp3_fid),
                       (backends.videos, job.video_fid)):  # fmt: skip
        if fid:
            store.delete(fid)
    with transaction(backends.sessions) as session:
        gone = jobs.get_job(session, job.id)
        if gone is not None:
            session.delete(gone)
