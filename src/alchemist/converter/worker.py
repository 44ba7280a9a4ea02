"""The converter service: consumes VIDEO_QUEUE, converts, stores the MP3, announces it on MP3_QUEUE.

Order per message: take the job (commit; a heartbeat marks the attempt alive) -> convert
into storage -> mark done and queue the announcement in one transaction (the outbox) ->
ack (by returning). A redelivered message finds the job done and only announces it again
if its owner was not told; an MP3 written by an attempt that died is reused or deleted,
never orphaned. Messages that die in the dead-letter queue end their job as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePath

from sqlalchemy.orm import Session

from alchemist import jobs
from alchemist.config import Settings
from alchemist.converter.engine import ConversionEngine
from alchemist.converter.errors import ConversionError
from alchemist.converter.options import ConversionLimits, ConversionResult
from alchemist.db.engine import run_in_transaction, transaction
from alchemist.db.models import Job, JobStatus
from alchemist.messaging.base import Delivery, PermanentFailure, Subscription, SubscriptionGroup
from alchemist.messaging.messages import ValidationError, VideoUploaded
from alchemist.outbox import OutboxRelay
from alchemist.storage.base import BlobNotFoundError, exists
from alchemist.telemetry import Telemetry
from alchemist.wiring import Backends

logger = logging.getLogger(__name__)
PROGRESS_EVERY = 1.0
MIN_OUTPUT_ALLOWANCE = 16 << 20  # any upload may yield this much (a short clip's MP3)


def utcnow() -> datetime:
    """Now, for heartbeats and leases."""
    return datetime.now(timezone.utc)


@dataclass
class ConverterService:
    """The handler of VIDEO_QUEUE (and of its dead letters) and what it needs."""

    settings: Settings
    backends: Backends
    engine: ConversionEngine
    relay: OutboxRelay
    telemetry: Telemetry = field(default_factory=Telemetry)

    async def start(self, concurrency: int = 1) -> Subscription:
        """Consume VIDEO_QUEUE with `concurrency` conversions at once, and its dead letters."""
        broker = self.backends.broker
        dead = await broker.consume_dead(self.settings.VIDEO_QUEUE, self.handle_dead)
        work = await broker.consume(self.settings.VIDEO_QUEUE, self.handle, prefetch=concurrency)
        return SubscriptionGroup(work, dead)

    async def handle(self, delivery: Delivery) -> None:
        """Convert one uploaded video (idempotent)."""
        try:
            message = VideoUploaded.model_validate(delivery.body)
        except ValidationError as exc:
            raise PermanentFailure(f"not a video message: {exc}") from exc
        job = await self._take(message.job_id)
        if job is None:
            return
        if job.attempts > self.settings.MAX_ATTEMPTS:
            # Earlier attempts never came back (their converter died): stop feeding the file in.
            await self._give_up(job, jobs.stopped_reason(job.attempts - 1), "converter_stopped")
            return
        logger.info("converting job %s (attempt %d)", job.id, job.attempts)
        try:
            async with self._heartbeat(job.id):
                mp3_fid, result, seconds = await asyncio.to_thread(self._convert, job)
        except ConversionError as exc:
            if exc.permanent or job.attempts >= self.settings.MAX_ATTEMPTS:
                await self._give_up(job, str(exc), exc.code)
                raise PermanentFailure(str(exc)) from exc
            raise
        except Exception as exc:
            if job.attempts >= self.settings.MAX_ATTEMPTS:
                await self._give_up(job, f"conversion failed after {job.attempts} attempts: {exc}", "error")
            raise
        await self._finish(job, mp3_fid, result, seconds)

    async def handle_dead(self, delivery: Delivery) -> None:
        """A dead-lettered video message: its job ends as failed and its owner is told."""
        job_id = delivery.body.get("job_id") if isinstance(delivery.body, dict) else None
        job = await run_in_transaction(self.backends.sessions, jobs.get_job, str(job_id)) if job_id else None
        if job is None or job.status not in JobStatus.UNFINISHED:
            return  # gone, or already ended (a permanent failure announces itself)
        reason = jobs.stopped_reason(job.attempts) if job.attempts else "the conversion could not be started"
        await self._give_up(job, reason, "dead_letter")

    async def _take(self, job_id: str) -> Job | None:
        """The job, taken for one attempt; None when there is nothing (more) to do here."""
        sessions, stall = self.backends.sessions, self.settings.STALL_SECONDS
        # A live worker may still hold the job (a redelivery racing its heartbeat, or a
        # sweeper's duplicate): wait for it to finish or fall silent, then take over.
        deadline = time.monotonic() + stall + self.settings.HEARTBEAT_SECONDS
        while True:
            job = await run_in_transaction(sessions, jobs.get_job, job_id)
            if job is None:
                logger.info("job %s was deleted; nothing to convert", job_id)
                return None
            if job.status not in JobStatus.UNFINISHED:
                await self._reannounce(job)  # a redelivery after a crash past the commit
                return None
            now = utcnow()
            stale_before = now - timedelta(seconds=stall)
            if await run_in_transaction(
                sessions, jobs.start_attempt, job_id, now=now, stale_before=stale_before
            ):
                return await run_in_transaction(sessions, jobs.get_job, job_id)
            if time.monotonic() > deadline:
                return None  # still held: the sweeper re-queues it if that worker is gone
            await asyncio.sleep(self.settings.HEARTBEAT_SECONDS)

    @contextlib.asynccontextmanager
    async def _heartbeat(self, job_id: str) -> AsyncIterator[None]:
        """Beat while the conversion runs, so sweepers and redeliveries know it is alive."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.settings.HEARTBEAT_SECONDS)
                with contextlib.suppress(Exception):  # a database blip must not stop the work
                    await run_in_transaction(self.backends.sessions, jobs.heartbeat, job_id, utcnow())

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _finish(self, job: Job, mp3_fid: str, result: ConversionResult | None, seconds: float) -> None:
        output_bytes = await asyncio.to_thread(self.backends.mp3s.stat, mp3_fid)
        expires = utcnow() + timedelta(days=self.settings.RETENTION_DAYS)

        def record(session: Session) -> str | None:
            winner = jobs.finish(
                session, job.id, mp3_fid=mp3_fid, seconds=seconds, output_bytes=output_bytes.size,
                duration=result.duration if result else 0.0, warning=result.warning if result else None,
                expires_at=expires,
            )  # fmt: skip
            done = jobs.get_job(session, job.id)
            if done is not None and winner == mp3_fid:
                jobs.queue_announcement(session, self.settings, done)
            return winner

        winner = await run_in_transaction(self.backends.sessions, record)
        self.relay.kick()
        if winner == mp3_fid:
            self.telemetry.conversions.labels("done").inc()
            self.telemetry.conversion_seconds.inc(seconds)
            self.telemetry.conversion_duration.observe(seconds)
        if winner != mp3_fid:
            # The job was deleted, or another attempt finished first: ours would be an orphan.
            await asyncio.to_thread(self.backends.mp3s.delete, mp3_fid)
            return
        if not self.settings.KEEP_VIDEOS and job.video_fid:
            await asyncio.to_thread(self._drop_video, job)

    def _drop_video(self, job: Job) -> None:
        """The source is not needed once converted (the sweeper retries if this fails)."""
        assert job.video_fid is not None
        self.backends.videos.delete(job.video_fid)
        with transaction(self.backends.sessions) as session:
            jobs.forget_video(session, job.id)

    def _convert(self, job: Job) -> tuple[str, ConversionResult | None, float]:
        """Reuse a complete MP3 from an attempt that died, else convert into a named blob."""
        mp3s = self.backends.mp3s
        if job.pending_mp3_fid:
            if exists(mp3s, job.pending_mp3_fid):
                return job.pending_mp3_fid, None, 0.0
            mp3s.delete(job.pending_mp3_fid)  # leftover chunks of a half-written blob
        if job.video_fid is None:
            raise ConversionError("the uploaded video is gone from storage")
        mp3_fid = mp3s.new_id()
        with transaction(self.backends.sessions) as session:
            jobs.set_pending_mp3(session, job.id, mp3_fid)
        started = time.monotonic()
        allowance = max(MIN_OUTPUT_ALLOWANCE, int(job.video_bytes * self.settings.OUTPUT_EXPANSION_LIMIT))
        with tempfile.TemporaryDirectory(prefix="alchemist-job-") as scratch:
            output = Path(scratch) / "out.mp3"
            try:
                source = self.backends.videos.open(job.video_fid)
            except BlobNotFoundError as exc:
                raise ConversionError("the uploaded video is gone from storage") from exc
            with source:
                result = self.engine.convert(
                    source, output, progress=self._progress_writer(job.id), filename=job.filename,
                    max_output_bytes=allowance,
                )  # fmt: skip
            with output.open("rb") as mp3:
                mp3s.put(
                    mp3, filename=f"{PurePath(job.filename).stem}.mp3",
                    content_type="audio/mpeg", blob_id=mp3_fid,
                )  # fmt: skip
        return mp3_fid, result, time.monotonic() - started

    def _progress_writer(self, job_id: str) -> Callable[[float, float | None], None]:
        last = [0.0]

        def write(done: float, total: float | None) -> None:
            now = time.monotonic()
            if not total or now - last[0] < PROGRESS_EVERY:
                return
            last[0] = now
            with contextlib.suppress(Exception), transaction(self.backends.sessions) as session:
                jobs.set_progress(session, job_id, done / total)

        return write

    async def _give_up(self, job: Job, reason: str, code: str) -> None:
        """Fail the job and queue the owner's notification, in one transaction."""

        def record(session: Session) -> bool:
            if not jobs.fail(session, job.id, reason):
                return False
            failed = jobs.get_job(session, job.id)
            if failed is not None:
                jobs.queue_announcement(session, self.settings, failed)
            return True

        if await run_in_transaction(self.backends.sessions, record):
            self.telemetry.conversions.labels("failed").inc()
            self.telemetry.failures.labels(code).inc()
        self.relay.kick()
        if not self.settings.KEEP_VIDEOS and job.video_fid:
            await asyncio.to_thread(self._drop_video, job)

    async def _reannounce(self, job: Job) -> None:
        if job.notified_at is None and job.status in JobStatus.FINISHED:
            await run_in_transaction(self.backends.sessions, jobs.queue_announcement, self.settings, job)
            self.relay.kick()


def build_engine(settings: Settings) -> ConversionEngine:
    """The engine with the configured duration limit and a spool dir in the data dir."""
    spool = Path(os.environ.get("ALCHEMIST_SPOOL_DIR", settings.ALCHEMIST_DATA_DIR / "spool"))
    return ConversionEngine(ConversionLimits(max_duration=settings.MAX_MEDIA_SECONDS), spool)
