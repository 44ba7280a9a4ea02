"""The sweeper on SQLite and MariaDB, with a clock the test moves: every job ends, storage stays bounded."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import transaction
from alchemist.db.models import Job, JobStatus
from alchemist.messaging.memory import InMemoryBroker
from alchemist.messaging.messages import Mp3Ready, VideoUploaded
from alchemist.outbox import OutboxRelay
from alchemist.storage.base import exists
from alchemist.sweeper import Sweeper, SweepReport
from alchemist.wiring import Backends
from tests.integration.conftest import Clock, bearer, configured, gateway, load_job, outbox_rows

OWNER = "ann@example.com"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"v" * 4000  # what the sweeper deletes; its content never matters
MP3 = b"ID3" + b"m" * 3000


def tuned(settings: Settings, **changes: object) -> Settings:
    """The test's settings with the sweeper's timings spelled out (and any changes)."""
    defaults: dict[str, object] = {
        "STALL_SECONDS": 60.0,
        "MAX_ATTEMPTS": 3,
        "QUEUED_REPUBLISH_SECONDS": 900.0,
        "NOTIFY_LEASE_SECONDS": 120.0,
        "RETENTION_DAYS": 7.0,
        "KEEP_VIDEOS": False,
    }
    return configured(settings, **{**defaults, **changes})


def sweeper(settings: Settings, backends: Backends, clock: Clock) -> Sweeper:
    """A sweeper on the test's clock, with a relay on the real one (what it queues is due at once)."""
    return Sweeper(settings, backends, OutboxRelay(backends.sessions, backends.broker), clock=clock)


def queued_job(backends: Backends) -> Job:
    """An uploaded job: its video stored, the job queued (its message already sent)."""
    video = backends.videos.put([VIDEO], filename="clip.mp4", content_type="video/mp4")
    with transaction(backends.sessions) as session:
        return jobs.create_job(
            session, owner=OWNER, filename="clip.mp4", video_fid=video.id, video_bytes=video.size
        )


def converting_job(backends: Backends, *, attempts: int, last_beat: datetime) -> Job:
    """A job taken `attempts` times, by converters that beat for the last time at `last_beat`."""
    job = queued_job(backends)
    with transaction(backends.sessions) as session:
        for attempt in range(attempts):
            beat = last_beat - timedelta(seconds=attempts - 1 - attempt)
            assert jobs.start_attempt(session, job.id, now=beat, stale_before=beat)
    return load_job(backends.sessions, job.id)


def done_job(backends: Backends, *, expires_at: datetime, notified: bool = True) -> Job:
    """A converted job with its MP3 stored (its owner told, unless `notified` is False)."""
    job = converting_job(backends, attempts=1, last_beat=expires_at - timedelta(days=30))
    mp3 = backends.mp3s.put([MP3], filename="clip.mp3", content_type="audio/mpeg")
    with transaction(backends.sessions) as session:
        jobs.finish(
            session, job.id, mp3_fid=mp3.id, duration=1.0, seconds=0.1, warning=None,
            output_bytes=mp3.size, expires_at=expires_at,
        )  # fmt: skip
        if notified:
            jobs.mark_notified(session, job.id, expires_at - timedelta(days=7))
    return load_job(backends.sessions, job.id)


def backdate(backends: Backends, job_id: str, updated_at: datetime) -> None:
    """Pretend the job last changed at `updated_at`."""
    with transaction(backends.sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=updated_at))


async def test_a_stalled_job_is_requeued_and_a_live_one_left_alone(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings)
    now = clock.pin()
    stalled = converting_job(backends, attempts=1, last_beat=now - timedelta(seconds=61))
    alive = converting_job(backends, attempts=1, last_beat=now - timedelta(seconds=59))
    sweeping = sweeper(settings, backends, clock)
    report = await sweeping.sweep_once()
    assert report == SweepReport(requeued=1)
    requeued, untouched = load_job(backends.sessions, stalled.id), load_job(backends.sessions, alive.id)
    assert (requeued.status, requeued.attempts, requeued.video_fid) == (
        JobStatus.QUEUED,
        1,
        stalled.video_fid,
    )
    assert untouched.status == JobStatus.CONVERTING
    assert jobs.as_utc(untouched.heartbeat_at) == jobs.as_utc(alive.heartbeat_at)
    [message] = outbox_rows(backends.sessions)
    assert message.queue == settings.VIDEO_QUEUE
    assert VideoUploaded.model_validate(message.body) == VideoUploaded(
        job_id=stalled.id, video_fid=stalled.video_fid or "", username=OWNER
    )
    assert await sweeping.relay.run_once() == 1
    assert isinstance(backends.broker, InMemoryBroker)
    assert backends.broker.depth(settings.VIDEO_QUEUE) == 1
    # The next pass finds nothing to do: the requeued job is waiting for its message.
    assert (await sweeping.sweep_once()).total() == 0
    assert outbox_rows(backends.sessions) == []


async def test_a_job_whose_converter_stopped_max_times_fails_and_its_owner_is_told(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings, MAX_ATTEMPTS=3)
    job = converting_job(backends, attempts=3, last_beat=clock.pin() - timedelta(seconds=61))
    sweeping = sweeper(settings, backends, clock)
    report = await sweeping.sweep_once()
    assert (report.failed, report.requeued) == (1, 0)
    failed = load_job(backends.sessions, job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith("the converter stopped 3 times while converting this file")
    [message] = outbox_rows(backends.sessions, settings.MP3_QUEUE)
    announced = Mp3Ready.model_validate(message.body)
    assert (announced.job_id, announced.status, announced.error) == (job.id, "failed", failed.error)
    assert outbox_rows(backends.sessions, settings.VIDEO_QUEUE) == []  # not fed to a converter again
    # A failed job's source is not needed any more either.
    assert failed.video_fid is None
    assert not exists(backends.videos, job.video_fid or "")
    assert (await sweeping.sweep_once()).total() == 0


async def test_a_freshly_queued_job_is_not_republished(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings)
    job = queued_job(backends)
    clock.pin()
    report = await sweeper(settings, backends, clock).sweep_once()
    assert report.republished == 0
    assert outbox_rows(backends.sessions) == []  # its own message is on its way: no duplicate
    assert load_job(backends.sessions, job.id).status == JobStatus.QUEUED


async def test_a_job_queued_too_long_is_republished_once(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings, QUEUED_REPUBLISH_SECONDS=900.0)
    job = queued_job(backends)
    sweeping = sweeper(settings, backends, clock)
    clock.pin()  # after the job was created: it has waited exactly as long as the test says
    clock.advance(901)
    assert (await sweeping.sweep_once()).republished == 1
    [message] = outbox_rows(backends.sessions)
    assert message.queue == settings.VIDEO_QUEUE
    assert VideoUploaded.model_validate(message.body).job_id == job.id
    assert await sweeping.relay.run_once() == 1
    clock.advance(1)
    assert (await sweeping.sweep_once()).republished == 0  # not on every pass
    assert outbox_rows(backends.sessions) == []
    assert load_job(backends.sessions, job.id).status == JobStatus.QUEUED


async def test_a_done_job_past_its_retention_expires_and_its_output_is_deleted(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings, RETENTION_DAYS=7.0)
    job = done_job(backends, expires_at=clock.pin() + timedelta(days=7))
    sweeping = sweeper(settings, backends, clock)
    assert (await sweeping.sweep_once()).outputs_expired == 0
    assert exists(backends.mp3s, job.mp3_fid or "")
    clock.advance(7 * 86_400 + 1)
    report = await sweeping.sweep_once()
    assert report.outputs_expired == 1
    expired = load_job(backends.sessions, job.id)
    assert expired.status == JobStatus.EXPIRED
    assert not exists(backends.mp3s, job.mp3_fid or "")
    with transaction(backends.sessions) as session:
        assert jobs.stored_bytes(session, OWNER) == 0  # the quota no longer counts it
    assert (await sweeping.sweep_once()).outputs_expired == 0


async def test_an_expired_jobs_download_link_stops_working(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings)
    job = done_job(backends, expires_at=clock.pin() + timedelta(days=7))
    async with gateway(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        shown = (
            await http.get(f"/api/v1/jobs/{job.id}", headers=bearer(settings, backends.sessions, OWNER))
        ).json()
        link = shown["download_url"]
        assert shown["expires_at"] is not None
        first = await http.get(link)
        assert (first.status_code, first.content) == (200, MP3)
        clock.advance(7 * 86_400 + 1)
        assert (await sweeper(settings, backends, clock).sweep_once()).outputs_expired == 1
        gone = await http.get(link)
        assert gone.status_code == 404
        shown = (
            await http.get(f"/api/v1/jobs/{job.id}", headers=bearer(settings, backends.sessions, OWNER))
        ).json()
        assert (shown["status"], shown["download_url"]) == ("expired", None)


@pytest.mark.parametrize("keep", [False, True])
async def test_a_finished_jobs_source_is_deleted_unless_kept(
    settings: Settings, backends: Backends, clock: Clock, keep: bool
) -> None:
    settings = tuned(settings, KEEP_VIDEOS=keep)
    done = done_job(backends, expires_at=clock() + timedelta(days=7))
    waiting = queued_job(backends)
    report = await sweeper(settings, backends, clock).sweep_once()
    assert report.sources_deleted == (0 if keep else 1)
    after = load_job(backends.sessions, done.id)
    assert (after.video_fid is None) is not keep
    assert exists(backends.videos, done.video_fid or "") is keep
    assert exists(backends.mp3s, done.mp3_fid or "")  # the output stays until it expires
    # An unfinished job still needs its source.
    assert load_job(backends.sessions, waiting.id).video_fid == waiting.video_fid
    assert exists(backends.videos, waiting.video_fid or "")


async def test_an_unnotified_finished_job_is_reannounced_once(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings, NOTIFY_LEASE_SECONDS=120.0)
    job = done_job(backends, expires_at=clock() + timedelta(days=7), notified=False)
    sweeping = sweeper(settings, backends, clock)
    clock.pin()  # after the job finished: it has been unnotified exactly as long as the test says
    assert (await sweeping.sweep_once()).renotified == 0  # its own announcement may be on its way
    clock.advance(121)
    assert (await sweeping.sweep_once()).renotified == 1
    [message] = outbox_rows(backends.sessions)
    assert message.queue == settings.MP3_QUEUE
    announced = Mp3Ready.model_validate(message.body)
    assert (announced.job_id, announced.status, announced.mp3_fid) == (job.id, "done", job.mp3_fid)
    clock.advance(1)
    assert (await sweeping.sweep_once()).renotified == 0  # not on every pass
    assert len(outbox_rows(backends.sessions, settings.MP3_QUEUE)) == 1


async def test_a_notification_someone_holds_is_not_reannounced(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings, NOTIFY_LEASE_SECONDS=120.0)
    job = done_job(backends, expires_at=clock.pin() + timedelta(days=7), notified=False)
    backdate(backends, job.id, clock() - timedelta(seconds=600))
    with transaction(backends.sessions) as session:  # a notifier is sending it right now
        assert jobs.claim_notification(session, job.id, now=clock(), lease=120) is not None
    assert (await sweeper(settings, backends, clock).sweep_once()).renotified == 0
    assert outbox_rows(backends.sessions) == []


async def test_a_restarted_sweeper_does_not_reannounce_what_was_just_reannounced(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings, NOTIFY_LEASE_SECONDS=120.0)
    job = done_job(backends, expires_at=clock.pin() + timedelta(days=7), notified=False)
    backdate(backends, job.id, clock() - timedelta(seconds=600))
    assert (await sweeper(settings, backends, clock).sweep_once()).renotified == 1
    # Another replica, or this gateway after a restart: a sweeper with no memory of that.
    assert (await sweeper(settings, backends, clock).sweep_once()).renotified == 0
    assert [row.body["job_id"] for row in outbox_rows(backends.sessions, settings.MP3_QUEUE)] == [job.id]


async def test_two_sweepers_in_the_same_pass_do_each_thing_once(
    settings: Settings, backends: Backends, clock: Clock
) -> None:
    settings = tuned(settings, MAX_ATTEMPTS=3)
    now = clock.pin()
    stale = now - timedelta(seconds=61)
    count = 3
    requeue = [converting_job(backends, attempts=1, last_beat=stale) for _ in range(count)]
    fail = [converting_job(backends, attempts=3, last_beat=stale) for _ in range(count)]
    republish = [queued_job(backends) for _ in range(count)]
    for job in republish:  # their message went out 901 s ago
        with transaction(backends.sessions) as session:
            session.execute(
                update(Job).where(Job.id == job.id).values(heartbeat_at=now - timedelta(seconds=901))
            )
    expire = [done_job(backends, expires_at=now - timedelta(seconds=1)) for _ in range(count)]
    renotify = [done_job(backends, expires_at=now + timedelta(days=7), notified=False) for _ in range(count)]
    for job in renotify:
        backdate(backends, job.id, now - timedelta(seconds=600))

    first, second = sweeper(settings, backends, clock), sweeper(settings, backends, clock)
    reports = await asyncio.gather(first.sweep_once(), second.sweep_once())

    done = SweepReport(**{kind: sum(getattr(r, kind) for r in reports) for kind in vars(SweepReport())})
    assert done == SweepReport(
        requeued=count, failed=count, republished=count, renotified=count,
        sources_deleted=3 * count,  # the sources of the failed, the expired and the renotified jobs
        outputs_expired=count,
    )  # fmt: skip
    messages = outbox_rows(backends.sessions)
    video = sorted(m.body["job_id"] for m in messages if m.queue == settings.VIDEO_QUEUE)
    mp3 = sorted(m.body["job_id"] for m in messages if m.queue == settings.MP3_QUEUE)
    assert video == sorted(job.id for job in requeue + republish)
    assert mp3 == sorted(job.id for job in fail + renotify)
    for job in fail:
        assert load_job(backends.sessions, job.id).status == JobStatus.FAILED
    for job in expire:
        assert load_job(backends.sessions, job.id).status == JobStatus.EXPIRED
        assert not exists(backends.mp3s, job.mp3_fid or "")
