"""The converter service: consumes VIDEO_QUEUE, converts, stores the MP3, publishes MP3_QUEUE.

Order per message: mark converting (commit) -> convert into storage -> mark done (commit)
-> publish -> ack (by returning). A redelivered message finds the job done and only
republishes; an MP3 written by an attempt that died is reused or deleted, never orphaned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath

from alchemist import jobs
from alchemist.config import Settings
from alchemist.converter.engine import ConversionEngine
from alchemist.converter.errors import ConversionError
from alchemist.converter.options import ConversionLimits, ConversionResult
from alchemist.db.engine import run_in_transaction, transaction
from alchemist.db.models import Job, JobStatus
from alchemist.messaging.base import Delivery, PermanentFailure, Subscription
from alchemist.messaging.messages import Mp3Ready, ValidationError, VideoUploaded
from alchemist.storage.base import BlobNotFoundError, exists
from alchemist.wiring import Backends

logger = logging.getLogger(__name__)
PROGRESS_EVERY = 1.0


@dataclass
class ConverterService:
    """The handler of VIDEO_QUEUE and what it needs."""

    settings: Settings
    backends: Backends
    engine: ConversionEngine

    async def start(self, concurrency: int = 1) -> Subscription:
        """Consume VIDEO_QUEUE with `concurrency` conversions at once."""
        return await self.backends.broker.consume(
            self.settings.VIDEO_QUEUE, self.handle, prefetch=concurrency
        )

    async def handle(self, delivery: Delivery) -> None:
        """Convert one uploaded video (idempotent)."""
        try:
            message = VideoUploaded.model_validate(delivery.body)
        except ValidationError as exc:
            raise PermanentFailure(f"not a video message: {exc}") from exc
        sessions = self.backends.sessions
        job = await run_in_transaction(sessions, jobs.get_job, message.job_id)
        if job is None:
            logger.info("job %s was deleted; nothing to convert", message.job_id)
            return
        if job.status in (JobStatus.DONE, JobStatus.FAILED):
            await self._announce(job)  # a redelivery after a crash past the commit
            return
        if not await run_in_transaction(sessions, jobs.start_attempt, job.id):
            return
        logger.info("converting job %s (attempt %d)", job.id, delivery.attempt)
        try:
            mp3_fid, result, seconds = await asyncio.to_thread(self._convert, job)
        except ConversionError as exc:
            if exc.permanent or delivery.attempt >= self.settings.MAX_ATTEMPTS:
                await self._give_up(job, str(exc))
                raise PermanentFailure(str(exc)) from exc
            raise
        except Exception as exc:
            if delivery.attempt >= self.settings.MAX_ATTEMPTS:
                await self._give_up(job, f"conversion failed after {delivery.attempt} attempts: {exc}")
            raise
        winner = await run_in_transaction(
            sessions, jobs.finish, job.id, mp3_fid=mp3_fid, seconds=seconds,
            duration=result.duration if result else 0.0, warning=result.warning if result else None,
        )  # fmt: skip
        if winner != mp3_fid:
            # The job was deleted, or another attempt finished first: ours would be an orphan.
            await asyncio.to_thread(self.backends.mp3s.delete, mp3_fid)
        done = await run_in_transaction(sessions, jobs.get_job, job.id)
        if done is not None:
            await self._announce(done)

    def _convert(self, job: Job) -> tuple[str, ConversionResult | None, float]:
        """Reuse a complete MP3 from an attempt that died, else convert into a named blob."""
        mp3s = self.backends.mp3s
        if job.pending_mp3_fid:
            if exists(mp3s, job.pending_mp3_fid):
                return job.pending_mp3_fid, None, 0.0
            mp3s.delete(job.pending_mp3_fid)  # leftover chunks of a half-written blob
        mp3_fid = mp3s.new_id()
        with transaction(self.backends.sessions) as session:
            jobs.set_pending_mp3(session, job.id, mp3_fid)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="alchemist-job-") as scratch:
            output = Path(scratch) / "out.mp3"
            try:
                source = self.backends.videos.open(job.video_fid)
            except BlobNotFoundError as exc:
                raise ConversionError("the uploaded video is gone from storage") from exc
            with source:
                result = self.engine.convert(
                    source, output, progress=self._progress_writer(job.id), filename=job.filename
                )
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
            with transaction(self.backends.sessions) as session:
                jobs.set_progress(session, job_id, done / total)

        return write

    async def _give_up(self, job: Job, reason: str) -> None:
        await run_in_transaction(self.backends.sessions, jobs.fail, job.id, reason)
        failed = await run_in_transaction(self.backends.sessions, jobs.get_job, job.id)
        if failed is not None:
            await self._announce(failed)

    async def _announce(self, job: Job) -> None:
        message = Mp3Ready(
            job_id=job.id, video_fid=job.video_fid, mp3_fid=job.mp3_fid, username=job.owner,
            status="done" if job.status == JobStatus.DONE else "failed", error=job.error,
        )  # fmt: skip
        await self.backends.broker.publish(
            self.settings.MP3_QUEUE, message.to_body(), message_id=f"{job.id}.{message.status}"
        )


def build_engine(settings: Settings) -> ConversionEngine:
    """The engine with the configured duration limit and a spool dir in the data dir."""
    spool = Path(os.environ.get("ALCHEMIST_SPOOL_DIR", settings.ALCHEMIST_DATA_DIR / "spool"))
    return ConversionEngine(ConversionLimits(max_duration=settings.MAX_MEDIA_SECONDS), spool)
