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
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePath

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from alchemist import jobs
from alchemist.config import Settings
from alchemist.converter.engine import ConversionEngine
from alchemist.converter.errors import ConversionError
from alchemist.converter.options import ConversionLimits, ConversionResult
from alchemist.db.engine import run_in_transaction, transaction
from alchemist.db.models import Job, JobStatus
from alchemist.db.outage import is_outage
from alchemist.messaging.base import Delivery, PermanentFailure, Subscription, SubscriptionGroup
from alchemist.messaging.messages import ValidationError, VideoUploaded
from alchemist.outbox import OutboxRelay
from alchemist.storage.base import BlobNotFoundError, exists
from alchemist.telemetry import Telemetry
from alchemist.wiring import Backends

logger = logging.getLogger(__name__)
PROGRESS_EVERY = 1.0
MIN_OUTPUT_ALLOWANCE = 16 << 20  # any upload may yield this much (a short clip's MP3)
SCRATCH_PREFIX = "alchemist-converter-"
REVIVED = re.compile(r"\.revived\.(\d+)$")  # the tag of a message that replaced a dead one
_scratch_dirs: dict[Path, Path] = {}


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
        """A dead-lettered video message: its job ends as failed and its owner is told.

        Unless the job was tried fewer than MAX_ATTEMPTS times: the broker counts deliveries,
        and some never became attempts (a converter killed while it waited for the job or the
        database, a connection reset), so the job gets a fresh message, at most MAX_ATTEMPTS
        times (the message id counts them), and never loops.
        """
        job_id = delivery.body.get("job_id") if isinstance(delivery.body, dict) else None
        job = await run_in_transaction(self.backends.sessions, jobs.get_job, str(job_id)) if job_id else None
        if job is None or job.status not in JobStatus.UNFINISHED:
            return  # gone, or already ended (a permanent failure announces itself)
        beat = jobs.as_utc(job.heartbeat_at)
        if (
            job.status == JobStatus.CONVERTING
            and beat
            and beat > utcnow() - timedelta(seconds=self.settings.STALL_SECONDS)
        ):
            # A live converter holds it (a copy of its message passed the delivery limit through
            # reconnects): leave it; if that converter dies, the sweeper ends or re-queues the job.
            return
        revived = int(match.group(1)) if (match := REVIVED.search(delivery.message_id)) else 0
        if job.attempts < self.settings.MAX_ATTEMPTS and revived < self.settings.MAX_ATTEMPTS:
            logger.warning(
                "job %s: its message died after %d of %d attempts; queued again",
                job.id, job.attempts, self.settings.MAX_ATTEMPTS,
            )  # fmt: skip
            tag = f"video.revived.{revived + 1}"
            await run_in_transaction(self.backends.sessions, jobs.queue_conversion, self.settings, job, tag)
            self.relay.kick()
            return
        reason = jobs.stopped_reason(job.attempts) if job.attempts else "the conversion could not be started"
        await self._give_up(job, reason, "dead_letter")

    async def _take(self, job_id: str) -> Job | None:
        """The job, taken for one attempt; None when there is nothing (more) to do here."""
        sessions, stall = self.backends.sessions, self.settings.STALL_SECONDS
        # A live worker may still hold the job (a redelivery racing its heartbeat, or a
        # sweeper's duplicate): wait for it to finish or fall silent, then take over.
        deadline = time.monotonic() + stall + self.settings.HEARTBEAT_SECONDS
        waiting_for_database = False
        while True:
            try:
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
            except DBAPIError as exc:
                if not is_outage(exc):
                    raise
                # Hold the message until the database is back: failing fast would spend one
                # of its few deliveries a second, and dead-letter (fail) a job nobody tried.
                if not waiting_for_database:
                    logger.warning("job %s waits for the database to come back: %s", job_id, exc)
                    waiting_for_database = True
                deadline = time.monotonic() + stall + self.settings.HEARTBEAT_SECONDS
                await asyncio.sleep(self.settings.HEARTBEAT_SECONDS)
                continue
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
        scratch_root = process_scratch(spool_root(self.settings))
        with tempfile.TemporaryDirectory(prefix="alchemist-job-", dir=scratch_root) as scratch:
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

        def record(session: Session) -> tuple[bool, str | None]:
            current = jobs.get_job(session, job.id)
            partial = current.pending_mp3_fid if current is not None else None
            if not jobs.fail(session, job.id, reason):
                return False, None
            failed = jobs.get_job(session, job.id)
            if failed is not None:
                jobs.queue_announcement(session, self.settings, failed)
            return True, partial

        ended, partial = await run_in_transaction(self.backends.sessions, record)
        if ended:
            self.telemetry.conversions.labels("failed").inc()
            self.telemetry.failures.labels(code).inc()
        if partial:  # an output a dead attempt wrote: the failed job will never use it
            await asyncio.to_thread(self.backends.mp3s.delete, partial)
        self.relay.kick()
        if not self.settings.KEEP_VIDEOS and job.video_fid:
            await asyncio.to_thread(self._drop_video, job)

    async def _reannounce(self, job: Job) -> None:
        if job.notified_at is None and job.status in JobStatus.FINISHED:
            await run_in_transaction(self.backends.sessions, jobs.queue_announcement, self.settings, job)
            self.relay.kick()


def build_engine(settings: Settings) -> ConversionEngine:
    """The engine with the configured duration limit, spooling into this process's scratch dir."""
    spool = process_scratch(spool_root(settings))
    return ConversionEngine(ConversionLimits(max_duration=settings.MAX_MEDIA_SECONDS), spool)


def spool_root(settings: Settings) -> Path:
    """ALCHEMIST_SPOOL_DIR, else `spool` in the data dir: where converters keep temp files."""
    return Path(os.environ.get("ALCHEMIST_SPOOL_DIR", settings.ALCHEMIST_DATA_DIR / "spool"))


def process_scratch(root: Path) -> Path:
    """This process's own temp dir under `root`, locked while it lives; dead converters' dirs go.

    A converter SIGKILLed mid-conversion cannot clean up its partial output: the next one to
    start on the same spool dir removes every scratch dir whose owner no longer holds its lock
    (a flock dies with its process, whatever the pid namespace).
    """
    if root in _scratch_dirs:
        return _scratch_dirs[root]
    root.mkdir(parents=True, exist_ok=True)
    guard = os.open(root / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)  # one converter at a time reaps and creates
        for other in root.glob(f"{SCRATCH_PREFIX}*"):
            if not _owner_alive(other):
                shutil.rmtree(other, ignore_errors=True)
        mine = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root))
        owner = os.open(mine / ".owner", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held (never closed) until we exit
    finally:
        os.close(guard)
    _scratch_dirs[root] = mine
    return mine


def _owner_alive(directory: Path) -> bool:
    try:
        probe = os.open(directory / ".owner", os.O_RDWR)
    except FileNotFoundError:
        return False  # its owner died before locking it (it was made under the guard)
    except OSError:
        return True  # not ours to judge
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(probe)  # releases the probe's lock, if it got one
    return False
