"""POST /upload (the seeds' route) and the options it accepts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import run_in_transaction
from alchemist.db.models import Job
from alchemist.gateway.deps import BackendsDep, CallerDep, StateDep
from alchemist.gateway.multipart import UploadError, store_upload
from alchemist.gateway.schemas import OptionField, OptionList, UploadAccepted, UploadOptions, errors

router = APIRouter(tags=["uploads"])
UPLOAD_OVERHEAD = 64 * 1024  # multipart headers and boundaries on top of the file itself


def _multipart_schema() -> dict[str, Any]:
    options = UploadOptions.model_json_schema()
    return {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "The video (one file)"},
            **options.get("properties", {}),
        },
        "additionalProperties": False,
    }


@router.post(
    "/upload",
    status_code=202,
    responses={
        202: {"headers": {"Location": {"description": "The job", "schema": {"type": "string"}}}},
        **errors(400, 401, 403, 413, 503),
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _multipart_schema()}}}
    },
)
async def upload_video(
    request: Request, response: Response, caller: CallerDep, backends: BackendsDep, state: StateDep
) -> UploadAccepted:
    """Upload a video (multipart field `file`, options as fields); its conversion is queued."""
    settings = state.settings
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else 0
    if size > settings.MAX_UPLOAD_BYTES + UPLOAD_OVERHEAD:
        raise HTTPException(413, f"the file is larger than the limit of {settings.MAX_UPLOAD_BYTES} bytes")
    used = await run_in_transaction(backends.sessions, jobs.stored_bytes, caller.username)
    check_quota(used, max(0, size - UPLOAD_OVERHEAD), settings.USER_QUOTA_BYTES)
    try:
        stored = await store_upload(
            request.stream(),
            request.headers.get("content-type", ""),
            backends.videos,
            settings.MAX_UPLOAD_BYTES,
        )
    except UploadError as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    try:
        check_quota(used, stored.blob.size, settings.USER_QUOTA_BYTES)
        options = parse_options(stored.fields)
        job = await run_in_transaction(
            backends.sessions, record_upload, settings, owner=caller.username, filename=stored.blob.filename,
            video_fid=stored.blob.id, video_bytes=stored.blob.size,
            webhook_url=str(options.webhook_url) if options.webhook_url else None,
        )  # fmt: skip
    except BaseException:
        await run_in_threadpool(backends.videos.delete, stored.blob.id)  # nothing half-stored
        raise
    state.relay.kick()  # the outbox holds the message: it is sent even if we die right now
    location = f"/api/v1/jobs/{job.id}"
    response.headers["Location"] = location
    return UploadAccepted(
        job_id=job.id, video_fid=stored.blob.id, status="queued", events=f"{location}/events", job=location
    )


def record_upload(session: Session, settings: Settings, /, **fields: Any) -> Job:
    """The job and its video message, committed together (the transactional outbox)."""
    job = jobs.create_job(session, **fields)
    jobs.queue_conversion(session, settings, job)
    return job


def check_quota(used: int, adding: int, quota: int) -> None:
    """413 when this upload would take the user past their storage quota."""
    if used + adding > quota:
        raise HTTPException(
            413,
            f"storage quota exceeded: you keep {_size(used)} of your {_size(quota)}; this upload needs "
            f"{_size(adding)} (delete finished jobs to make room)",
        )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"


@router.get("/api/v1/options")
async def upload_options() -> OptionList:
    """The options `POST /upload` accepts, described for a form (the page builds its form from this)."""
    return OptionList(fields=option_fields(UploadOptions))


def parse_options(fields: dict[str, str]) -> UploadOptions:
    """The upload's text fields as options; a 400 naming any unknown or invalid field."""
    given = {name: value for name, value in fields.items() if value != ""}
    try:
        return UploadOptions.model_validate(given)
    except ValidationError as exc:
        raise HTTPException(400, describe_validation(exc)) from exc


def describe_validation(exc: ValidationError) -> str:
    """One sentence per problem, naming the field."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown field {where!r}")
        else:
            problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def option_fields(model: type[BaseModel]) -> list[OptionField]:
    """Describe a model's fields for a form, from its JSON schema."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    described = []
    for name, prop in schema.get("properties", {}).items():
        variants = [v for v in prop.get("anyOf", [prop]) if v.get("type") != "null"]
        chosen = variants[0] if variants else prop
        kind = "choice" if "enum" in chosen else chosen.get("type", "string")
        described.append(
            OptionField(
                name=name,
                label=prop.get("title", name),
                type=kind if kind in _KINDS else "string",
                choices=[str(c) for c in chosen["enum"]] if "enum" in chosen else None,
                default=prop.get("default"),
                description=prop.get("description", ""),
                minimum=chosen.get("minimum"),
                maximum=chosen.get("maximum"),
                required=name in required,
            )
        )
    return described


_KINDS = {"string", "integer", "number", "boolean", "choice"}
