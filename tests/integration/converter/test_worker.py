"""The converter service in-process (real engine, in-process broker, SQLite and MariaDB): jobs end."""

from __future__ import annotations

import math
import wave
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alchemist import jobs
from alchemist.config import Settings
from alchemist.converter.engine import ConversionEngine
from alchemist.converter.worker import MIN_OUTPUT_ALLOWANCE, ConverterService
from alchemist.db.engine import transaction
from alchemist.db.models import Job, JobStatus
from alchemist.messaging.base import Delivery, PermanentFailure
from alchemist.messaging.memory import InMemoryBroker
from alchemist.messaging.messages import Mp3Ready, VideoUploaded
from alchemist.outbox import OutboxRelay
from alchemist.storage.base import exists
from alchemist.wiring import Backends
from tests.integration.conftest import configured, eventually, load_job, outbox_rows
from tests.media import write_media

OWNER = "ann@example.com"


@dataclass
class Converter:
    """The service under test, running, and what it runs on."""

    service: ConverterService
    settings: Settings
    backends: Backends
    broker: InMemoryBroker


@pytest.fixture
async def converter(
    settings: Settings, backends: Backends, engine: ConversionEngine
) -> AsyncIterator[Converter]:
    """ConverterService consuming VIDEO_QUEUE and its dead letters, with its relay running."""
    tuned = configured(settings, MAX_ATTEMPTS=3, KEEP_VIDEOS=False)
    assert isinstance(backends.broker, InMemoryBroker)
    relay = OutboxRelay(backends.sessions, backends.broker)
    relay.start()
    service = ConverterService(tuned, backends, engine, relay)
    subscription = await service.start()
    try:
        yield Converter(service, tuned, backends, backends.broker)
    finally:
        await subscription.cancel(grace=30)
        await relay.stop()


def upload(backends: Backends, path: Path) -> Job:
    """Store the file and record its queued job (its message not sent: tests send it)."""
    with path.open("rb") as source:
        video = backends.videos.put(source, filename=path.name, content_type="application/octet-stream")
    with transaction(backends.sessions) as session:
        return jobs.create_job(
            session, owner=OWNER, filename=path.name, video_fid=video.id, video_bytes=video.size
        )


def killed(backends: Backends, job: Job, times: int) -> Job:
    """The job as `times` converters left it: each took it, then died without a word."""
    moment = datetime.now(timezone.utc) - timedelta(hours=1)
    with transaction(backends.sessions) as session:
        for _ in range(times):
            moment += timedelta(minutes=5)
            assert jobs.start_attempt(session, job.id, now=moment, stale_before=moment)
    return load_job(backends.sessions, job.id)


def video_message(job: Job) -> dict[str, object]:
    """The message the gateway sends for an upload."""
    return VideoUploaded(job_id=job.id, video_fid=job.video_fid or "", username=job.owner).to_body()


async def dead_letter(broker: InMemoryBroker, queue: str, body: dict[str, object], message_id: str) -> None:
    """Put a message into the queue's dead letters the way a broker does: a consumer gave up on it.

    (On RabbitMQ the delivery limit does this when converters keep dying; in one process a
    consumer's PermanentFailure is the way in. The dead-letter handler cannot tell them apart.)
    """
    refused: list[Delivery] = []

    async def give_up(delivery: Delivery) -> None:
        refused.append(delivery)
        raise PermanentFailure("test: the message is dead-lettered")

    stand_in = await broker.consume(queue, give_up)
    await broker.publish(queue, body, message_id=message_id)
    await eventually(lambda: bool(refused))
    await stand_in.cancel(grace=10)


async def announcements(converter: Converter) -> list[Mp3Ready]:
    """Every MP3_QUEUE message published so far (the relay flushed first), consumed."""
    await eventually(lambda: outbox_rows(converter.backends.sessions) == [])  # the relay sent it all
    queue = converter.settings.MP3_QUEUE
    expected = converter.broker.depth(queue)
    got: list[Mp3Ready] = []

    async def record(delivery: Delivery) -> None:
        got.append(Mp3Ready.model_validate(delivery.body))

    subscription = await converter.broker.consume(queue, record, prefetch=100)
    await eventually(lambda: len(got) >= expected)
    await subscription.cancel()
    return got


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A short real video with a soundtrack."""
    return write_media(tmp_path / "clip.mp4", seconds=1.0)


async def test_a_dead_lettered_message_of_an_unfinished_job_fails_it_and_tells_the_owner_once(
    settings: Settings, backends: Backends, engine: ConversionEngine, clip: Path
) -> None:
    tuned = configured(settings, MAX_ATTEMPTS=3, KEEP_VIDEOS=False)
    assert isinstance(backends.broker, InMemoryBroker)
    job = killed(backends, upload(backends, clip), times=4)
    # Dead-lettered while no converter consumed dead letters: the next one must still see it.
    await dead_letter(backends.broker, tuned.VIDEO_QUEUE, video_message(job), f"{job.id}.video")
    relay = OutboxRelay(backends.sessions, backends.broker)
    relay.start()
    service = ConverterService(tuned, backends, engine, relay)
    subscription = await service.start()
    converter = Converter(service, tuned, backends, backends.broker)
    try:
        await eventually(lambda: load_job(backends.sessions, job.id).status == JobStatus.FAILED)
        # The same dead letter once more (a broker redelivers after a crash): nothing new.
        duplicate = Delivery(f"{tuned.VIDEO_QUEUE}.dead", video_message(job), f"{job.id}.video", 1)
        await service.handle_dead(duplicate)
        told = await announcements(converter)
    finally:
        await subscription.cancel(grace=30)
        await relay.stop()
    failed = load_job(backends.sessions, job.id)
    assert failed.error is not None
    assert failed.error.startswith("the converter stopped 4 times while converting this file")
    assert [(m.job_id, m.status, m.error) for m in told] == [(job.id, "failed", failed.error)]
    assert outbox_rows(backends.sessions) == []
    assert failed.video_fid is None  # its source is not kept for a job that ended
    assert not exists(backends.videos, job.video_fid or "")


async def test_a_dead_letter_for_a_finished_job_changes_nothing(converter: Converter, clip: Path) -> None:
    backends, settings = converter.backends, converter.settings
    job = killed(backends, upload(backends, clip), times=1)
    with transaction(backends.sessions) as session:
        jobs.finish(
            session, job.id, mp3_fid="c" * 32, duration=1.0, seconds=0.2, warning=None, output_bytes=5
        )
        jobs.mark_notified(session, job.id, datetime.now(timezone.utc))
    before = load_job(backends.sessions, job.id)
    await converter.service.handle_dead(
        Delivery(f"{settings.VIDEO_QUEUE}.dead", video_message(job), f"{job.id}.video", 1)
    )
    after = load_job(backends.sessions, job.id)
    assert (after.status, after.error, after.mp3_fid) == (JobStatus.DONE, None, before.mp3_fid)
    assert outbox_rows(backends.sessions) == []
    assert await announcements(converter) == []
    assert exists(backends.videos, job.video_fid or "")  # the dead-letter handler deletes nothing


async def test_a_dead_letter_for_a_job_a_live_converter_holds_is_left_to_it(
    converter: Converter, clip: Path
) -> None:
    backends, settings = converter.backends, converter.settings
    job = upload(backends, clip)
    now = datetime.now(timezone.utc)
    with transaction(backends.sessions) as session:  # a converter took it and beats right now
        assert jobs.start_attempt(session, job.id, now=now, stale_before=now)
    await converter.service.handle_dead(
        Delivery(f"{settings.VIDEO_QUEUE}.dead", video_message(job), f"{job.id}.video", 1)
    )
    after = load_job(backends.sessions, job.id)
    assert (after.status, after.error) == (JobStatus.CONVERTING, None)
    assert outbox_rows(backends.sessions) == []


def write_low_rate_wav(path: Path, *, rate: int, seconds: int) -> Path:
    """A mono 16-bit WAV: a few bytes per second that ffmpeg turns into ~8 kB/s of MP3."""
    samples = array("h", (int(8000 * math.sin(n)) for n in range(rate * seconds)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


async def test_an_upload_whose_mp3_would_outgrow_its_allowance_fails_with_the_reason(
    converter: Converter, tmp_path: Path
) -> None:
    backends, settings = converter.backends, converter.settings
    # 2200 s at 8 Hz: ~35 kB of WAV, and (at the 64 kb/s of an 8 kHz MP3) ~17.6 MB of output.
    wav = write_low_rate_wav(tmp_path / "hum.wav", rate=8, seconds=2200)
    size = wav.stat().st_size
    allowance = max(MIN_OUTPUT_ALLOWANCE, int(size * settings.OUTPUT_EXPANSION_LIMIT))
    assert allowance == MIN_OUTPUT_ALLOWANCE == 16 << 20  # the floor applies to so small a file
    job = upload(backends, wav)
    with transaction(backends.sessions) as session:
        jobs.queue_conversion(session, settings, job)
    converter.service.relay.kick()
    await eventually(lambda: load_job(backends.sessions, job.id).status == JobStatus.FAILED, timeout=120)
    failed = load_job(backends.sessions, job.id)
    assert failed.error is not None
    assert f"larger than {allowance} bytes" in failed.error
    assert failed.attempts == 1  # a permanent verdict: not retried
    told = await announcements(converter)
    assert [(m.job_id, m.status, m.error) for m in told] == [(job.id, "failed", failed.error)]
    assert list(backends.mp3s.list()) == []  # nothing of the refused output is kept
    assert failed.pending_mp3_fid is None


async def test_an_ordinary_upload_still_converts(converter: Converter, clip: Path) -> None:
    backends, settings = converter.backends, converter.settings
    job = upload(backends, clip)
    with transaction(backends.sessions) as session:
        jobs.queue_conversion(session, settings, job)
    converter.service.relay.kick()
    await eventually(lambda: load_job(backends.sessions, job.id).status == JobStatus.DONE, timeout=120)
    done = load_job(backends.sessions, job.id)
    assert done.mp3_fid is not None
    assert done.output_bytes == backends.mp3s.stat(done.mp3_fid).size
    assert done.expires_at is not None
    told = await announcements(converter)
    assert [(m.job_id, m.status, m.mp3_fid) for m in told] == [(job.id, "done", done.mp3_fid)]
