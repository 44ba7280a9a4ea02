"""The converter under the faults the chaos test found: a database outage, deliveries that were
never attempts, and a SIGKILL that leaves a half-written MP3 behind."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from alchemist import jobs
from alchemist.config import Settings
from alchemist.converter.engine import ConversionEngine
from alchemist.converter.worker import ConverterService
from alchemist.db.engine import transaction
from alchemist.db.models import Job, JobStatus
from alchemist.messaging.base import Delivery
from alchemist.messaging.messages import VideoUploaded
from alchemist.outbox import OutboxRelay
from alchemist.wiring import Backends
from tests.integration.conftest import configured, load_job, outbox_rows
from tests.media import write_media

OWNER = "ann@example.com"
SCRATCH_CHILD = (
    "import sys, time; from pathlib import Path; from alchemist.converter.worker import process_scratch; "
    "print(process_scratch(Path(sys.argv[1])), flush=True); time.sleep(float(sys.argv[2]))"
)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A short real video with a soundtrack."""
    return write_media(tmp_path / "clip.mp4", seconds=1.0)


def upload(backends: Backends, path: Path) -> Job:
    """Store the file and record its queued job."""
    with path.open("rb") as source:
        video = backends.videos.put(source, filename=path.name, content_type="application/octet-stream")
    with transaction(backends.sessions) as session:
        return jobs.create_job(
            session, owner=OWNER, filename=path.name, video_fid=video.id, video_bytes=video.size
        )


def video_message(job: Job) -> dict[str, object]:
    """The message the gateway sends for an upload."""
    return VideoUploaded(job_id=job.id, video_fid=job.video_fid or "", username=job.owner).to_body()


class FlakySessions:
    """A sessionmaker whose first `failures` sessions find the database gone (connection refused)."""

    def __init__(self, inner: sessionmaker[Session], failures: int) -> None:
        self.inner, self.failures, self.refused = inner, failures, 0

    def __call__(self) -> Session:
        if self.refused < self.failures:
            self.refused += 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "Connection refused"))
        return self.inner()


async def test_a_delivery_that_arrives_while_the_database_is_away_waits_for_it(
    settings: Settings, backends: Backends, engine: ConversionEngine, clip: Path
) -> None:
    # Failing fast would spend a delivery per try: a 10 s outage used to dead-letter (fail) jobs.
    tuned = configured(settings, MAX_ATTEMPTS=3, HEARTBEAT_SECONDS=0.05)
    job = upload(backends, clip)
    flaky = FlakySessions(backends.sessions, failures=5)
    relay = OutboxRelay(backends.sessions, backends.broker)  # not running: the outbox keeps its rows
    service = ConverterService(tuned, replace(backends, sessions=flaky), engine, relay)  # type: ignore[arg-type]
    await service.handle(Delivery(tuned.VIDEO_QUEUE, video_message(job), f"{job.id}.video", 1))
    done = load_job(backends.sessions, job.id)
    assert flaky.refused == 5
    assert (done.status, done.attempts, done.error) == (JobStatus.DONE, 1, None)


async def test_a_dead_letter_of_a_job_tried_fewer_than_max_attempts_times_queues_it_again(
    settings: Settings, backends: Backends, engine: ConversionEngine, clip: Path
) -> None:
    tuned = configured(settings, MAX_ATTEMPTS=3)
    job = upload(backends, clip)
    moment = datetime.now(timezone.utc) - timedelta(hours=1)
    with transaction(backends.sessions) as session:  # one converter took it and died
        assert jobs.start_attempt(session, job.id, now=moment, stale_before=moment)
    service = ConverterService(tuned, backends, engine, OutboxRelay(backends.sessions, backends.broker))
    dead = f"{tuned.VIDEO_QUEUE}.dead"
    # Its deliveries died without attempts (converters killed while they waited for it).
    await service.handle_dead(Delivery(dead, video_message(job), f"{job.id}.video", 1))
    again = load_job(backends.sessions, job.id)
    assert (again.status, again.error) == (JobStatus.CONVERTING, None)
    queued = outbox_rows(backends.sessions, tuned.VIDEO_QUEUE)
    assert [(row.message_id, row.body["job_id"]) for row in queued] == [(f"{job.id}.video.revived.1", job.id)]
    # Revived MAX_ATTEMPTS times already: it ends, and says how often it was really tried.
    await service.handle_dead(Delivery(dead, video_message(job), f"{job.id}.video.revived.3", 1))
    failed = load_job(backends.sessions, job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith("the converter stopped once while converting this file")


def test_a_killed_converters_scratch_dir_goes_when_the_next_one_starts_and_a_live_ones_stays(
    tmp_path: Path,
) -> None:
    root = tmp_path / "spool"

    def converter(seconds: float) -> tuple[subprocess.Popen[str], Path]:
        child = subprocess.Popen(
            [sys.executable, "-c", SCRATCH_CHILD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        return child, Path(child.stdout.readline().strip())

    live, live_dir = converter(60)
    try:
        dead, dead_dir = converter(60)
        partial = dead_dir / "alchemist-job-x" / ".out.mp3.1.part"
        partial.parent.mkdir()
        partial.write_bytes(b"half an mp3")
        dead.kill()  # SIGKILL: no cleanup of its own
        dead.wait()
        later, later_dir = converter(0)
        assert later.wait(30) == 0
        assert not dead_dir.exists()
        assert live_dir.is_dir() and later_dir.is_dir() and later_dir != live_dir
    finally:
        live.kill()
        live.wait()
