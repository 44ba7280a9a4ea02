"""The gateway: the only public entry point (login, upload, download, the jobs API)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from alchemist import __version__, jobs
from alchemist.config import Settings
from alchemist.db.engine import run_in_transaction, transaction
from alchemist.db.models import Job, JobStatus
from alchemist.gateway.metrics import GatewayMetrics
from alchemist.gateway.ranges import RangeNotSatisfiableError, parse_range
from alchemist.gateway.security import Caller, caller_from
from alchemist.gateway.uploads import UploadError, store_upload
from alchemist.health import readiness_response
from alchemist.messaging.base import PublishError
from alchemist.messaging.messages import VideoUploaded
from alchemist.storage.base import BlobNotFoundError, iter_range
from alchemist.tokens import TokenSigner
from alchemist.wiring import Backends, build_backends

logger = logging.getLogger(__name__)
UPLOAD_OVERHEAD = 64 * 1024
EVENTS_POLL = 0.5


def create_app(
    settings: Settings,
    backends: Backends | None = None,
    auth_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The gateway app; backends are built in the lifespan unless handed in (alchemist up)."""
    signer = TokenSigner(secret=settings.jwt_secret(), issuer=settings.JWT_ISSUER)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = backends is None
        built = backends or await build_backends(settings, name="gateway")
        app.state.backends = built
        app.state.metrics = GatewayMetrics(built.sessions)
        app.state.auth = httpx.AsyncClient(base_url=settings.auth_url, transport=auth_transport, timeout=30)
        try:
            yield
        finally:
            await app.state.auth.aclose()
            if own:
                await built.close()

    app = FastAPI(title="Audio Alchemist", version=__version__, lifespan=lifespan)

    def state(request: Request) -> Backends:
        found: Backends = request.app.state.backends
        return found

    def caller(request: Request) -> Caller:
        return caller_from(request, signer)

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics: GatewayMetrics | None = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; it has been logged"}, 500)

    @app.post("/login", summary="Trade HTTP Basic credentials for a JWT (forwarded to auth)")
    async def login(request: Request) -> Response:
        headers = {}
        if "authorization" in request.headers:
            headers["Authorization"] = request.headers["authorization"]
        try:
            upstream = await request.app.state.auth.post("/login", headers=headers)
        except httpx.HTTPError as exc:
            raise HTTPException(503, f"the auth service is unreachable: {exc}") from exc
        passed = {k: v for k, v in upstream.headers.items() if k in ("www-authenticate", "retry-after")}
        return Response(
            upstream.content, upstream.status_code, headers=passed,
            media_type=upstream.headers.get("content-type"),
        )  # fmt: skip

    @app.post("/upload", summary="Upload a video (multipart field 'file'); starts a conversion")
    async def upload(request: Request) -> JSONResponse:
        user = caller(request)
        found = state(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.MAX_UPLOAD_BYTES + UPLOAD_OVERHEAD:
            raise HTTPException(
                413, f"the file is larger than the limit of {settings.MAX_UPLOAD_BYTES} bytes"
            )
        try:
            stored = await store_upload(
                request.stream(), request.headers.get("content-type", ""), found.videos,
                settings.MAX_UPLOAD_BYTES,
            )  # fmt: skip
        except UploadError as exc:
            raise HTTPException(exc.status, exc.detail) from exc
        webhook = stored.fields.get("webhook_url") or None
        if webhook and not webhook.startswith(("http://", "https://")):
            await run_in_threadpool(found.videos.delete, stored.blob.id)
            raise HTTPException(400, "webhook_url must be an http:// or https:// URL")

        try:
            job = await run_in_transaction(
                found.sessions, jobs.create_job, owner=user.username, filename=stored.blob.filename,
                video_fid=stored.blob.id, video_bytes=stored.blob.size, webhook_url=webhook,
            )  # fmt: skip
        except Exception:
            await run_in_threadpool(found.videos.delete, stored.blob.id)
            raise
        message = VideoUploaded(job_id=job.id, video_fid=job.video_fid, username=job.owner)
        try:
            await found.broker.publish(settings.VIDEO_QUEUE, message.to_body(), message_id=f"{job.id}.video")
        except PublishError as exc:
            await run_in_threadpool(_forget, found, job)
            raise HTTPException(503, f"could not queue the conversion, nothing was kept: {exc}") from exc
        return JSONResponse(
            {"job_id": job.id, "video_fid": job.video_fid, "status": job.status,
             "events": f"/api/v1/jobs/{job.id}/events"}
        )  # fmt: skip

    @app.get("/download", summary="Download an MP3 by its fid (Range requests supported)")
    async def download(request: Request, fid: str = Query(min_length=1, max_length=64)) -> Response:
        user = caller(request)
        found = state(request)

        job = await run_in_transaction(found.sessions, jobs.job_by_mp3, fid, user.username, user.admin)
        if job is None:
            raise HTTPException(404, f"no MP3 with fid {fid!r}")
        try:
            info = await run_in_threadpool(found.mp3s.stat, fid)
        except BlobNotFoundError as exc:
            raise HTTPException(404, f"no MP3 with fid {fid!r}") from exc
        name = f"{PurePath(job.filename).stem or 'audio'}.mp3"
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Disposition": _attachment(name),
        }
        try:
            span = parse_range(request.headers.get("range"), info.size)
        except RangeNotSatisfiableError:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{info.size}"})
        start, end = span or (0, info.size - 1)
        status = 206 if span else 200
        if span:
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        headers["Content-Length"] = str(max(0, end - start + 1))
        body = iterate_in_threadpool(iter_range(found.mp3s, fid, start, end))  # empty span: no bytes
        return StreamingResponse(body, status_code=status, media_type="audio/mpeg", headers=headers)

    @app.get("/api/v1/jobs", summary="Your jobs, newest first (admins: everyone's with all=true)")
    async def list_jobs(request: Request, all: bool = False) -> dict[str, Any]:
        user = caller(request)
        found = state(request)
        owner = None if (all and user.admin) else user.username

        listed = await run_in_transaction(found.sessions, jobs.list_jobs, owner)
        return {"jobs": [jobs.job_json(job) for job in listed]}

    @app.get("/api/v1/jobs/{job_id}", summary="One job")
    async def get_job(request: Request, job_id: str) -> dict[str, Any]:
        return jobs.job_json(await _visible(request, job_id))

    @app.delete("/api/v1/jobs/{job_id}", summary="Delete a job and its files")
    async def delete_job(request: Request, job_id: str) -> Response:
        job = await _visible(request, job_id)
        found = state(request)
        await run_in_threadpool(_forget, found, job)
        return Response(status_code=204)

    @app.get("/api/v1/jobs/{job_id}/events", summary="Server-sent events: status and progress")
    async def job_events(request: Request, job_id: str) -> StreamingResponse:
        await _visible(request, job_id)
        found = state(request)

        async def events() -> AsyncIterator[str]:
            last: str | None = None
            while True:
                job = await run_in_transaction(found.sessions, jobs.get_job, job_id)
                if job is None:
                    yield "event: deleted\ndata: {}\n\n"
                    return
                payload = json.dumps(jobs.job_json(job))
                if payload != last:
                    last = payload
                    yield f"event: job\ndata: {payload}\n\n"
                if job.status in (JobStatus.DONE, JobStatus.FAILED):
                    return
                await asyncio.sleep(EVENTS_POLL)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip

    async def _visible(request: Request, job_id: str) -> Job:
        user = caller(request)
        found = state(request)

        job = await run_in_transaction(found.sessions, jobs.visible_job, job_id, user.username, user.admin)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Database, storage and broker are reachable")
    async def readyz(request: Request) -> JSONResponse:
        return await readiness_response(state(request))

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        registry = request.app.state.metrics.registry
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def _forget(found: Backends, job: Job) -> None:
    """Delete a job's files, then its record (a failure leaves a record the user can retry)."""
    for store, fid in ((found.mp3s, job.mp3_fid), (found.mp3s, job.pending_mp3_fid),
                       (found.videos, job.video_fid)):  # fmt: skip
        if fid:
            store.delete(fid)
    with transaction(found.sessions) as session:
        gone = jobs.get_job(session, job.id)
        if gone is not None:
            session.delete(gone)


def _attachment(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
