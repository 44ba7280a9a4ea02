"""The jobs API: list (paged), one job, delete, and server-sent events for live pages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from alchemist import jobs
from alchemist.db.engine import run_in_transaction
from alchemist.db.models import Job, JobStatus
from alchemist.gateway.deps import BackendsDep, CallerDep, StateDep
from alchemist.gateway.lifecycle import forget_job
from alchemist.gateway.schemas import Job as JobOut
from alchemist.gateway.schemas import JobPage, errors

router = APIRouter(prefix="/api/v1", tags=["jobs"])
EVENTS_POLL = 0.5
KEEPALIVE_SECONDS = 15.0
# Clocks of the gateway and converter hosts differ a little: look back this far and let the
# per-job payload cache drop what was sent already.
CHANGE_OVERLAP = timedelta(seconds=5)
# Before OpenAPI 3.2 (`itemSchema`), the schema of a text/event-stream describes one event.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["job", "deleted"]},
        "data": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "if": {"required": ["event"], "properties": {"event": {"const": "job"}}},
    "then": {
        "required": ["data"],
        "properties": {
            "data": {
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/Job"},
            }
        },
    },
}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
        "description": "Server-sent events: `event: job` with a Job as data (`deleted` when it is gone)",
    }
}


def job_out(request: Request, state: StateDep, job: Job) -> JobOut:
    """A job as the API shows it, with a signed download link when it is done."""
    link = None
    if job.status == JobStatus.DONE and job.mp3_fid:
        link = state.links.url(str(request.base_url), job.id, job.mp3_fid)
    return JobOut.model_validate(jobs.job_json(job, link))


@router.get("/jobs", responses=errors(401, 403, 422))
async def list_jobs(
    request: Request,
    caller: CallerDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    all: Annotated[bool, Query(description="Everyone's jobs (admins only)")] = False,
) -> JobPage:
    """Your jobs, newest first, one page at a time (admins: everyone's with all=true)."""
    owner = None if (all and caller.admin) else caller.username
    found, total = await run_in_transaction(state.backends.sessions, jobs.page_jobs, owner, limit, offset)
    return JobPage(
        jobs=[job_out(request, state, job) for job in found], total=total, limit=limit, offset=offset
    )


@router.get("/jobs/{job_id}", responses=errors(401, 403, 404, 422))
async def read_job(request: Request, job_id: str, caller: CallerDep, state: StateDep) -> JobOut:
    """One of your jobs."""
    return job_out(request, state, await visible(state, caller.username, caller.admin, job_id))


@router.delete(
    "/jobs/{job_id}", status_code=204, response_class=Response, responses=errors(401, 403, 404, 422)
)
async def delete_job(job_id: str, caller: CallerDep, backends: BackendsDep, state: StateDep) -> Response:
    """Delete one of your jobs and its files (its download link stops working)."""
    job = await visible(state, caller.username, caller.admin, job_id)
    await run_in_threadpool(forget_job, backends, job)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **errors(401, 403, 404, 422)},
)
async def job_events(request: Request, job_id: str, caller: CallerDep, state: StateDep) -> StreamingResponse:
    """Server-sent events of one job (status and progress) until it ends."""
    await visible(state, caller.username, caller.admin, job_id)

    async def events() -> AsyncIterator[str]:
        last: str | None = None
        while True:
            job = await run_in_transaction(state.backends.sessions, jobs.get_job, job_id)
            if job is None:
                yield "event: deleted\ndata: {}\n\n"
                return
            payload = job_out(request, state, job).model_dump_json()
            if payload != last:
                last = payload
                yield f"event: job\ndata: {payload}\n\n"
            if job.status in (JobStatus.DONE, JobStatus.FAILED):
                return
            await asyncio.sleep(EVENTS_POLL)

    return _event_stream(events())


@router.get("/events", response_class=StreamingResponse, responses={**SSE_RESPONSE, **errors(401, 403, 422)})
async def watch_jobs(
    request: Request,
    caller: CallerDep,
    state: StateDep,
    all: Annotated[bool, Query(description="Everyone's jobs (admins only)")] = False,
) -> StreamingResponse:
    """Server-sent events for a live list: each of your jobs whenever it is created or changes."""
    owner = None if (all and caller.admin) else caller.username

    async def events() -> AsyncIterator[str]:
        sent: dict[str, str] = {}
        since = datetime.now(timezone.utc)
        quiet_since = time.monotonic()
        yield "retry: 2000\n\n"
        while True:
            now = datetime.now(timezone.utc)
            changed = await run_in_transaction(
                state.backends.sessions, jobs.changed_since, owner, since - CHANGE_OVERLAP
            )
            since = now
            for job in changed:
                payload = job_out(request, state, job).model_dump_json()
                if sent.get(job.id) != payload:
                    sent[job.id] = payload
                    quiet_since = time.monotonic()
                    yield f"event: job\ndata: {payload}\n\n"
            if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"  # proxies close silent connections
            await asyncio.sleep(EVENTS_POLL)

    return _event_stream(events())


async def visible(state: StateDep, username: str, admin: bool, job_id: str) -> Job:
    """The job if this caller may see it; else 404 (whether it exists or not)."""
    job = await run_in_transaction(state.backends.sessions, jobs.visible_job, job_id, username, admin)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)
