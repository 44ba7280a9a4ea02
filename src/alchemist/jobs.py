"""Job records: every transition is a conditional update, so redelivery is harmless.

Callers own the transaction (one place commits: `alchemist.db.engine.transaction`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from alchemist.db.models import Job, JobStatus


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


def start_attempt(session: Session, job_id: str) -> bool:
    """queued/converting -> converting, counting the attempt; False when already finished."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(JobStatus.UNFINISHED))
        .values(status=JobStatus.CONVERTING, attempts=Job.attempts + 1, error=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def set_pending_mp3(session: Session, job_id: str, mp3_fid: str) -> None:
    """Remember the MP3 id an attempt is about to write (so a crash leaves no orphan)."""
    session.execute(update(Job).where(Job.id == job_id).values(pending_mp3_fid=mp3_fid))


def set_progress(session: Session, job_id: str, progress: float) -> None:
    """Record progress (0..1) of a converting job."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.CONVERTING)
        .values(progress=max(0.0, min(1.0, progress)))
    )


def finish(
    session: Session,
    job_id: str,
    *,
    mp3_fid: str,
    duration: float,
    seconds: float,
    warning: str | None,
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


def claim_notification(session: Session, job_id: str) -> bool:
    """True for exactly one caller per job: the one that should notify."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.notified_at.is_(None))
        .values(notified_at=datetime.now(timezone.utc))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_notification(session: Session, job_id: str) -> None:
    """Undo a claim when sending failed, so a retry may notify."""
    session.execute(update(Job).where(Job.id == job_id).values(notified_at=None))


def unfinished_jobs(session: Session) -> list[Job]:
    """Jobs still queued or converting (to re-enqueue after an in-process broker restarts)."""
    return list(session.scalars(select(Job).where(Job.status.in_(JobStatus.UNFINISHED))))


def unnotified_jobs(session: Session) -> list[Job]:
    """Finished jobs whose owner was not told yet."""
    finished = (JobStatus.DONE, JobStatus.FAILED)
    return list(session.scalars(select(Job).where(Job.status.in_(finished), Job.notified_at.is_(None))))


def status_counts(session: Session) -> dict[str, int]:
    """How many jobs are in each status."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    counts = dict.fromkeys(JobStatus.ALL, 0)
    counts.update({status: int(count) for status, count in rows})
    return counts


def oldest_queued_at(session: Session) -> datetime | None:
    """When the oldest still-queued job was created (queue lag)."""
    return session.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED))


def conversion_totals(session: Session) -> tuple[int, float]:
    """Count and sum of conversion seconds of done jobs."""
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(Job.conversion_seconds), 0.0)).where(
            Job.status == JobStatus.DONE
        )
    ).one()
    return int(row[0]), float(row[1] or 0.0)


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
        "download_url": download_url if job.status == JobStatus.DONE else None,
    }
