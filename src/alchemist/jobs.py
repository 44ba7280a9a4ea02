"""Job records: every transition is a conditional update, so redelivery is harmless.

Callers own the transaction (one place commits: `alchemist.db.engine.transaction`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from alchemist import outbox
from alchemist.config import Settings
from alchemist.db.models import Job, JobStatus, utcnow
from alchemist.messaging.messages import Mp3Ready, VideoUploaded


def create_job(
    session: Session,
    *,
    owner: str,
    filename: str,
    video_fid: str,
    video_bytes: int,
    webhook_url: str | None = None,
) -> Job:
    """A new queued job."""
    job = Job(
        id=uuid.uuid4().hex, owner=owner, filename=filename[:255], status=JobStatus.QUEUED,
        progress=0.0, video_fid=video_fid, video_bytes=video_bytes, webhook_url=webhook_url,
        attempts=0,
    )  # fmt: skip
    session.add(job)
    session.flush()
    return job


def stopped_reason(attempts: int) -> str:
    """What the owner reads when converters kept dying on their file."""
    times = "once" if attempts == 1 else f"{attempts} times"
    return f"the converter stopped {times} while converting this file (it may be damaged or too demanding)"


def queue_conversion(session: Session, queues: Settings, job: Job, tag: str = "video") -> None:
    """Queue the job's video message in the caller's transaction (the outbox sends it)."""
    message = VideoUploaded(job_id=job.id, video_fid=job.video_fid or "", username=job.owner)
    outbox.add(session, queues.VIDEO_QUEUE, message.to_body(), f"{job.id}.{tag}")


def queue_announcement(session: Session, queues: Settings, job: Job, tag: str | None = None) -> None:
    """Queue the message that the job ended (MP3_QUEUE) in the caller's transaction."""
    status = "done" if job.status == JobStatus.DONE else "failed"
    message = Mp3Ready(
        job_id=job.id, video_fid=job.video_fid or "", mp3_fid=job.mp3_fid, username=job.owner,
        status=status, error=job.error,
    )  # fmt: skip
    outbox.add(session, queues.MP3_QUEUE, message.to_body(), f"{job.id}.{tag or status}")


def get_job(session: Session, job_id: str) -> Job | None:
    """The job with this id."""
    return session.get(Job, job_id)


def visible_job(session: Session, job_id: str, user: str, admin: bool) -> Job | None:
    """The job if this user may see it (its owner, or an admin); else None."""
    job = session.get(Job, job_id)
    return job if job is not None and (admin or job.owner == user) else None


def job_by_mp3(session: Session, mp3_fid: str, user: str, admin: bool) -> Job | None:
    """The job whose MP3 this is, if this user may see it."""
    job = session.scalar(select(Job).where(Job.mp3_fid == mp3_fid))
    return job if job is not None and (admin or job.owner == user) else None


def list_jobs(session: Session, owner: str | None, limit: int = 100, offset: int = 0) -> list[Job]:
    """Newest first; every owner's when owner is None (admins)."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return list(session.scalars(query))


def count_jobs(session: Session, owner: str | None) -> int:
    """How many jobs `list_jobs` pages through."""
    query = select(func.count()).select_from(Job)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return int(session.scalar(query) or 0)


def page_jobs(session: Session, owner: str | None, limit: int, offset: int) -> tuple[list[Job], int]:
    """One page of jobs, newest first, and how many there are in all."""
    return list_jobs(session, owner, limit, offset), count_jobs(session, owner)


def changed_since(session: Session, owner: str | None, since: datetime, limit: int = 200) -> list[Job]:
    """Jobs created or changed at or after `since`, oldest change first (the live list)."""
    query = select(Job).where(Job.updated_at >= since).order_by(Job.updated_at, Job.id).limit(limit)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return list(session.scalars(query))


def start_attempt(session: Session, job_id: str, *, now: datetime, stale_before: datetime) -> bool:
    """Take the job for one attempt: queued, or converting by a worker whose heartbeat stopped.

    False when it is finished, gone, or a live worker holds it (its heartbeat is newer than
    `stale_before`): two converters never work on one job at once.
    """
    takeable = or_(
        Job.status == JobStatus.QUEUED,
        and_(
            Job.status == JobStatus.CONVERTING,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before),
        ),
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, takeable)
        .values(status=JobStatus.CONVERTING, attempts=Job.attempts + 1, error=None, heartbeat_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def heartbeat(session: Session, job_id: str, now: datetime) -> None:
    """The worker converting this job is alive (updated_at stays: the live list ignores this)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.CONVERTING)
        .values(heartbeat_at=now, updated_at=Job.updated_at)
    )


def set_pending_mp3(session: Session, job_id: str, mp3_fid: str) -> None:
    """Remember the MP3 id an attempt is about to write (so a crash leaves no orphan)."""
    session.execute(update(Job).where(Job.id == job_id).values(pending_mp3_fid=mp3_fid))


def set_progress(session: Session, job_id: str, progress: float, now: datetime | None = None) -> None:
    """Record progress (0..1) of a converting job; it doubles as a heartbeat."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.CONVERTING)
        .values(progress=max(0.0, min(1.0, progress)), heartbeat_at=now or utcnow())
    )


def finish(
    session: Session,
    job_id: str,
    *,
    mp3_fid: str,
    duration: float,
    seconds: float,
    warning: str | None,
    output_bytes: int | None = None,
    expires_at: datetime | None = None,
) -> str | None:
    """Mark done with this MP3 unless done already; the MP3 id that won (None: job gone)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(JobStatus.UNFINISHED))
        .values(
            status=JobStatus.DONE,
            mp3_fid=mp3_fid,
            pending_mp3_fid=None,
            progress=1.0,
            duration=duration,
            conversion_seconds=seconds,
            warning=warning,
            output_bytes=output_bytes,
            expires_at=expires_at,
        )
    )
    job = session.get(Job, job_id)
    return None if job is None else job.mp3_fid


def fail(session: Session, job_id: str, reason: str) -> bool:
    """Mark an unfinished job failed with a reason; False when it was finished already."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(JobStatus.UNFINISHED))
        .values(status=JobStatus.FAILED, error=reason[:2000], pending_mp3_fid=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def forget_video(session: Session, job_id: str) -> bool:
    """The source video was deleted (it is kept only until the job is done); False if known already."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.video_fid.is_not(None))
        .values(video_fid=None, updated_at=Job.updated_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def claim_notification(session: Session, job_id: str, *, now: datetime, lease: float) -> Job | None:
    """Lease the job's notification to this caller (None: told already, or another holds it).

    The lease expires, so a notifier that dies between the claim and the send is replaced.
    """
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(JobStatus.FINISHED),
            Job.notified_at.is_(None),
            or_(Job.notify_lease_until.is_(None), Job.notify_lease_until < now),
        )
        .values(
            notify_lease_until=now + timedelta(seconds=lease),
            notify_attempts=Job.notify_attempts + 1,
            updated_at=Job.updated_at,
        )
    )
    return session.get(Job, job_id) if result.rowcount else None  # type: ignore[attr-defined]


def mark_notified(session: Session, job_id: str, now: datetime) -> None:
    """The owner was told; no notifier will tell them again."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(notified_at=now, notify_lease_until=None, updated_at=Job.updated_at)
    )


def release_notification(session: Session, job_id: str) -> None:
    """Undo a claim when sending failed, so a retry may notify at once."""
    session.execute(
        update(Job).where(Job.id == job_id).values(notify_lease_until=None, updated_at=Job.updated_at)
    )


def unfinished_jobs(session: Session) -> list[Job]:
    """Jobs still queued or converting (to re-enqueue after an in-process broker restarts)."""
    return list(session.scalars(select(Job).where(Job.status.in_(JobStatus.UNFINISHED))))


def unnotified_jobs(session: Session, *, now: datetime | None = None, limit: int = 500) -> list[Job]:
    """Finished jobs whose owner was not told yet and whose notification nobody holds."""
    query = select(Job).where(Job.status.in_(JobStatus.FINISHED), Job.notified_at.is_(None))
    if now is not None:
        query = query.where(or_(Job.notify_lease_until.is_(None), Job.notify_lease_until < now))
    return list(session.scalars(query.limit(limit)))


def mark_reannounced(session: Session, job_id: str, *, before: datetime, now: datetime) -> bool:
    """Take re-announcing a finished job nobody has told, unless it was re-announced since `before`.

    A finished job's heartbeat_at (no converter beats for it any more) is when it was last
    re-announced, so one sweeper of many re-announces it, once per lease.
    """
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(JobStatus.FINISHED),
            Job.notified_at.is_(None),
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < before),
        )
        .values(heartbeat_at=now, updated_at=Job.updated_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def stalled_jobs(session: Session, stale_before: datetime, limit: int = 500) -> list[Job]:
    """Jobs converting whose worker has not beaten since `stale_before` (it died)."""
    query = select(Job).where(
        Job.status == JobStatus.CONVERTING,
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before),
    )
    return list(session.scalars(query.limit(limit)))


def requeue(session: Session, job_id: str, stale_before: datetime, now: datetime) -> bool:
    """Give a stalled job back to the queue, unless its worker beat meanwhile."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.CONVERTING,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before),
        )
        .values(status=JobStatus.QUEUED, heartbeat_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _queued_before(before: datetime) -> ColumnElement[bool]:
    """Queued, and its message last sent (heartbeat_at; else its creation) before `before`."""
    sent_before = or_(and_(Job.heartbeat_at.is_(None), Job.created_at < before), Job.heartbeat_at < before)
    return and_(Job.status == JobStatus.QUEUED, sent_before)


def waiting_since(session: Session, before: datetime, limit: int = 500) -> list[Job]:
    """Jobs queued since before `before` (their message may have been lost)."""
    return list(session.scalars(select(Job).where(_queued_before(before)).limit(limit)))


def touch_queued(session: Session, job_id: str, before: datetime, now: datetime) -> bool:
    """Note that a queued job's message is sent again, unless someone did since `before`."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, _queued_before(before))
        .values(heartbeat_at=now, updated_at=Job.updated_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def expired_outputs(session: Session, now: datetime, limit: int = 500) -> list[Job]:
    """Done jobs whose output has outlived its retention."""
    query = select(Job).where(Job.status == JobStatus.DONE, Job.expires_at.is_not(None), Job.expires_at < now)
    return list(session.scalars(query.limit(limit)))


def mark_expired(session: Session, job_id: str) -> bool:
    """The output was deleted after its retention; the record stays for the owner's history.

    False when it was marked already (by another sweeper).
    """
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.DONE).values(status=JobStatus.EXPIRED)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finished_with_video(session: Session, limit: int = 500) -> list[Job]:
    """Finished jobs whose source video is still stored."""
    query = select(Job).where(
        Job.status.in_((*JobStatus.FINISHED, JobStatus.EXPIRED)), Job.video_fid.is_not(None)
    )
    return list(session.scalars(query.limit(limit)))


def stored_bytes(session: Session, owner: str) -> int:
    """Bytes this user's jobs keep in storage (sources not yet deleted, and outputs)."""
    videos = select(func.coalesce(func.sum(Job.video_bytes), 0)).where(
        Job.owner == owner, Job.video_fid.is_not(None)
    )
    outputs = select(func.coalesce(func.sum(Job.output_bytes), 0)).where(
        Job.owner == owner, Job.status == JobStatus.DONE
    )
    return int(session.scalar(videos) or 0) + int(session.scalar(outputs) or 0)


def referenced_blobs(session: Session) -> tuple[set[str], set[str]]:
    """Every video id and every output id some job still refers to."""
    rows = session.execute(select(Job.video_fid, Job.mp3_fid, Job.pending_mp3_fid)).all()
    videos = {row[0] for row in rows if row[0]}
    outputs = {fid for row in rows for fid in row[1:] if fid}
    return videos, outputs


def status_counts(session: Session) -> dict[str, int]:
    """How many jobs are in each status."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    counts = dict.fromkeys(JobStatus.ALL, 0)
    counts.update({status: int(count) for status, count in rows})
    return counts


def oldest_queued_at(session: Session) -> datetime | None:
    """When the oldest still-queued job was created (queue lag)."""
    return session.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED))


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored timestamp in UTC with its offset (SQLite hands them back naive)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def job_json(job: Job, download_url: str | None = None) -> dict[str, Any]:
    """The public JSON of a job (API responses and webhooks)."""
    created, updated = as_utc(job.created_at), as_utc(job.updated_at)
    return {
        "id": job.id,
        "filename": job.filename,
        "owner": job.owner,
        "status": job.status,
        "progress": round(job.progress, 4),
        "video_fid": job.video_fid,
        "mp3_fid": job.mp3_fid,
        "error": job.error,
        "warning": job.warning,
        "attempts": job.attempts,
        "duration": job.duration,
        "created_at": created.isoformat() if created else None,
        "updated_at": updated.isoformat() if updated else None,
        "expires_at": _iso(job.expires_at),
        "download_url": download_url if job.status == JobStatus.DONE else None,
    }


def _iso(moment: datetime | None) -> str | None:
    utc = as_utc(moment)
    return utc.isoformat() if utc else None
