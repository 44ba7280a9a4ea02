"""Downloads: the seeds' GET /download?fid= (Bearer) and a job's signed, expiring link."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from alchemist import jobs
from alchemist.db.engine import run_in_transaction
from alchemist.db.models import Job, JobStatus
from alchemist.gateway.deps import BackendsDep, CallerDep, StateDep
from alchemist.gateway.ranges import RangeNotSatisfiableError, parse_range
from alchemist.gateway.schemas import errors
from alchemist.links import LinkError
from alchemist.storage.base import BlobNotFoundError, BlobStore, iter_range
from alchemist.wiring import Backends

router = APIRouter(tags=["downloads"])
MEDIA_TYPE = "audio/mpeg"
AUDIO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "description": "The MP3",
    },
    206: {
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "description": "A range",
    },
}
Fid = Annotated[str, Query(min_length=1, max_length=64, description="The MP3's id (mp3_fid)")]
JobId = Annotated[str, Path(max_length=64, description="The job's id")]  # checked before any query
# What a Content-Disposition quoted-string may hold as is: printable ASCII but the quote and backslash.
PLAIN_NAME = frozenset(chr(code) for code in range(0x20, 0x7F)) - {'"', "\\"}


@router.get(
    "/download",
    response_class=StreamingResponse,
    responses={**AUDIO_RESPONSE, **errors(401, 403, 404, 416, 422)},
)
async def download_mp3(request: Request, fid: Fid, caller: CallerDep, backends: BackendsDep) -> Response:
    """Download an MP3 by its fid, as in the seeds (Range requests supported)."""
    job = await run_in_transaction(backends.sessions, jobs.job_by_mp3, fid, caller.username, caller.admin)
    if job is None or job.mp3_fid is None:
        raise HTTPException(404, f"no MP3 with fid {fid!r}")
    return await stream_output(request, backends, job, job.mp3_fid)


@router.get(
    "/api/v1/jobs/{job_id}/download",
    response_class=StreamingResponse,
    responses={**AUDIO_RESPONSE, **errors(401, 403, 404, 416, 422)},
    # Signed in (Bearer or cookie), or no credentials at all with the download_url's query.
    openapi_extra={"security": [{"HTTPBearer": []}, {"APIKeyCookie": []}, {}]},
)
async def download_job(
    request: Request,
    job_id: JobId,
    state: StateDep,
    expires: Annotated[int | None, Query(description="From the download_url")] = None,
    signature: Annotated[str | None, Query(max_length=128, description="From the download_url")] = None,
) -> Response:
    """Download a done job's output: signed in, or with its `download_url` (no header needed)."""
    backends = state.backends
    if signature is None and expires is None:
        caller = await state.authenticator.authenticate(request)
        job = await run_in_transaction(
            backends.sessions, jobs.visible_job, job_id, caller.username, caller.admin
        )
    else:
        job = await run_in_transaction(backends.sessions, jobs.get_job, job_id)
    if job is None or job.status != JobStatus.DONE or job.mp3_fid is None:
        raise HTTPException(404, f"no finished job {job_id!r} (deleted, not yours, or not done yet)")
    if signature is not None or expires is not None:
        try:
            state.links.check(job.id, job.mp3_fid, expires or 0, signature or "")
        except LinkError as exc:
            raise HTTPException(403, str(exc)) from exc
    return await stream_output(request, backends, job, job.mp3_fid)


async def stream_output(request: Request, backends: Backends, job: Job, fid: str) -> Response:
    """Stream a stored output with Range support, named after the uploaded file."""
    store: BlobStore = backends.mp3s
    try:
        info = await run_in_threadpool(store.stat, fid)
    except BlobNotFoundError as exc:
        raise HTTPException(404, f"no MP3 with fid {fid!r}") from exc
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": attachment(f"{PurePath(job.filename).stem or 'audio'}.mp3"),
    }
    try:
        span = parse_range(request.headers.get("range"), info.size)
    except RangeNotSatisfiableError:
        raise HTTPException(416, f"the range is outside the file's {info.size} bytes",
                            headers={"Content-Range": f"bytes */{info.size}"}) from None  # fmt: skip
    start, end = span or (0, info.size - 1)
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    headers["Content-Length"] = str(max(0, end - start + 1))
    body = iterate_in_threadpool(iter_range(store, fid, start, end))  # an empty span sends no bytes
    return StreamingResponse(body, status_code=206 if span else 200, media_type=MEDIA_TYPE, headers=headers)


def attachment(name: str) -> str:
    """A Content-Disposition that keeps a non-ASCII name (RFC 6266) with an ASCII fallback.

    Names are made safe at upload; this encoding is valid for any string all the same (a
    control character or quote in an older record never breaks the response).
    """
    ascii_name = "".join(char if char in PLAIN_NAME else "_" for char in name.replace('"', "'"))
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
