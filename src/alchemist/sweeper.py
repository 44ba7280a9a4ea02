"""The sweeper: every job ends and storage stays bounded, whatever died along the way.

Each pass re-queues (or fails) jobs whose converter stopped beating, republishes jobs that
waited in `queued` too long, re-drives notifications nobody finished, deletes sources of
finished jobs and outputs past their retention. Every step is a conditional update, so any
number of sweepers (one per gateway replica) can run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session, sessionmaker

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import run_in_transaction, transaction
from alchemist.db.models import Job
from alchemist.outbox import OutboxRelay
from alchemist.storage.base import BlobInfo, BlobNotFoundError, BlobStore
from alchemist.telemetry import Telemetry
from alchemist.wiring import Backends

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The sweeper's clock (tests hand in their own)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Orphan:
    """A stored blob no job refers to."""

    store: str
    blob: BlobInfo


@dataclass
class StorageAudit:
    """Blobs no job refers to, and pieces of writes that never finished."""

    orphans: list[Orphan]
    partial: int


def audit_storage(
    sessions: sessionmaker[Session],
    videos_store: BlobStore,
    outputs_store: BlobStore,
    older_than: datetime,
    *,
    fix: bool = False,
) -> StorageAudit:
    """Find (and with `fix`, delete) orphans and partial writes older than `older_than`.

    Newer blobs are left alone: an upload stores its file just before it records its job.
    """
    with transaction(sessions) as session:
        videos, outputs = jobs.referenced_blobs(session)
    found: list[Orphan] = []
    partial = 0
    for name, store, referenced in (("videos", videos_store, videos), ("outputs", outputs_store, outputs)):
        found += [
            Orphan(name, blob)
            for blob in store.list()
            if blob.id not in referenced and blob.created < older_than
        ]
        partial += store.purge_partial(older_than, dry_run=not fix)
    if fix:
        with transaction(sessions) as session:  # refer-check again: a job may have come
            videos, outputs = jobs.referenced_blobs(session)
        for orphan in found:
            store, referenced = (
                (videos_store, videos) if orphan.store == "videos" else (outputs_store, outputs)
            )
            if orphan.blob.id not in referenced:
                store.delete(orphan.blob.id)
    return StorageAudit(found, partial)


@dataclass
class SweepReport:
    """What one pass did."""

    requeued: int = 0
    failed: int = 0
    republished: int = 0
    renotified: int = 0
    sources_deleted: int = 0
    outputs_expired: int = 0
    orphans_deleted: int = 0

    def total(self) -> int:
        """Everything it changed."""
        return sum(vars(self).values())


@dataclass
class Sweeper:
    """Finds stuck work and expired files; runs every SWEEP_INTERVAL_SECONDS."""

    settings: Settings
    backends: Backends
    relay: OutboxRelay
    clock: Callable[[], datetime] = utcnow
    telemetry: Telemetry | None = None
    _last_audit: float | None = None
    _task: asyncio.Task[None] | None = None

    async def sweep_once(self) -> SweepReport:
        """One pass over every kind of stuck job and expired file."""
        report = SweepReport()
        now = self.clock()
        await self._stalled(now, report)
        await self._waiting(now, report)
        await self._unnotified(now, report)
        await self._sources(report)
        await self._expired(now, report)
        await self._orphans(now, report)
        if report.total():
            self.relay.kick()
            if self.telemetry is not None:
                for action, count in vars(report).items():
                    if count:
                        self.telemetry.sweeps.labels(action).inc(count)
            logger.info("sweep: %s", report)
        return report

    async def _stalled(self, now: datetime, report: SweepReport) -> None:
        stale_before = now - timedelta(seconds=self.settings.STALL_SECONDS)
        for job in await self._read(jobs.stalled_jobs, stale_before):
            if job.attempts >= self.settings.MAX_ATTEMPTS:
                if await self._write(self._fail, job, jobs.stopped_reason(job.attempts)):
                    report.failed += 1
                    if job.pending_mp3_fid:  # what its last attempt wrote will never be used
                        await asyncio.to_thread(self.backends.mp3s.delete, job.pending_mp3_fid)
            elif await self._write(self._requeue, job, stale_before, now):
                report.requeued += 1

    async def _waiting(self, now: datetime, report: SweepReport) -> None:
        before = now - timedelta(seconds=self.settings.QUEUED_REPUBLISH_SECONDS)
        for job in await self._read(jobs.waiting_since, before):
            if await self._write(self._republish, job, before, now):
                report.republished += 1

    async def _unnotified(self, now: datetime, report: SweepReport) -> None:
        before = now - timedelta(seconds=self.settings.NOTIFY_LEASE_SECONDS)
        for job in await self._read(jobs.unnotified_jobs, now=now):
            finished = jobs.as_utc(job.updated_at)
            if finished is None or finished > before:
                continue  # its own message may still be on its way
            if await self._write(self._renotify, job, before, now):
                report.renotified += 1

    async def _sources(self, report: SweepReport) -> None:
        if self.settings.KEEP_VIDEOS:
            return
        for job in await self._read(jobs.finished_with_video):
            assert job.video_fid is not None
            await asyncio.to_thread(self.backends.videos.delete, job.video_fid)
            if await self._write(jobs.forget_video, job.id):  # else another sweeper did it
                report.sources_deleted += 1

    async def _expired(self, now: datetime, report: SweepReport) -> None:
        for job in await self._read(jobs.expired_outputs, now):
            if job.mp3_fid:
                with contextlib.suppress(BlobNotFoundError):
                    await asyncio.to_thread(self.backends.mp3s.delete, job.mp3_fid)
            if await self._write(jobs.mark_expired, job.id):  # else another sweeper did it
                report.outputs_expired += 1

    async def _orphans(self, now: datetime, report: SweepReport) -> None:
        due = (
            self._last_audit is None
            or time.monotonic() - self._last_audit >= self.settings.ORPHAN_SCAN_SECONDS
        )
        if not due:
            return
        self._last_audit = time.monotonic()
        older_than = now - timedelta(seconds=self.settings.ORPHAN_MIN_AGE_SECONDS)
        backends = self.backends
        audit = await asyncio.to_thread(
            audit_storage, backends.sessions, backends.videos, backends.mp3s, older_than, fix=True
        )
        report.orphans_deleted += len(audit.orphans) + audit.partial

    def _fail(self, session: Session, job: Job, reason: str) -> bool:
        if not jobs.fail(session, job.id, reason):
            return False
        failed = jobs.get_job(session, job.id)
        if failed is not None:
            jobs.queue_announcement(session, self.settings, failed)
        return True

    def _requeue(self, session: Session, job: Job, stale_before: datetime, now: datetime) -> bool:
        if not jobs.requeue(session, job.id, stale_before, now):
            return False
        jobs.queue_conversion(session, self.settings, job, f"video.requeue.{job.attempts}")
        return True

    def _republish(self, session: Session, job: Job, before: datetime, now: datetime) -> bool:
        if not jobs.touch_queued(session, job.id, before, now):
            return False
        jobs.queue_conversion(session, self.settings, job, f"video.republish.{int(now.timestamp())}")
        return True

    def _renotify(self, session: Session, job: Job, before: datetime, now: datetime) -> bool:
        if not jobs.mark_reannounced(session, job.id, before=before, now=now):
            return False  # another sweeper re-announced it within the lease
        jobs.queue_announcement(session, self.settings, job, f"renotify.{job.notify_attempts}")
        return True

    async def _read(self, query: Callable[..., list[Job]], *args: object, **kwargs: object) -> list[Job]:
        return await run_in_transaction(self.backends.sessions, query, *args, **kwargs)

    async def _write(self, change: Callable[..., object], *args: object) -> object:
        return await run_in_transaction(self.backends.sessions, change, *args)

    async def run(self) -> None:
        """Sweep until cancelled; an outage only skips a pass."""
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or storage is away; the next pass retries
                logger.warning("sweep failed: %s", exc)
            await asyncio.sleep(self.settings.SWEEP_INTERVAL_SECONDS)

    def start(self) -> None:
        """Run in the background of this event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="sweeper")

    async def stop(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
