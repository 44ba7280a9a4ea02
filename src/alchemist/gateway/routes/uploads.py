"""POST /upload (the seeds' route) and the options it accepts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from alchemist import jobs, netguard
from alchemist.config import Settings
from alchemist.db.engine import run_in_transaction
from alchemist.db.models import Job
from alchemist.gateway.deps import BackendsDep, CallerDep, StateDep
from alchemist.gateway.multipart import (
    MAX_NON_FILE_BYTES,
    MAX_SHOWN_NAME,
    FormLimits,
    UploadError,
    store_upload,
)
from alchemist.gateway.schemas import OptionField, OptionList, UploadAccepted, UploadOptions, errors

router = APIRouter(tags=["uploads"])
UPLOAD_OVERHEAD = MAX_NON_FILE_BYTES  # fields, part headers and boundaries on top of the file itself
# A refused body is not read to its end (uvicorn would drain it): the connection closes instead.
STOP_READING = {"Connection": "close"}
MAX_DECLARED_DIGITS = 19  # a longer Content-Length is larger than any limit (and than int() reads)


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
    limits = FormLimits(max_file_bytes=settings.MAX_UPLOAD_BYTES)
    size = declared_length(request.headers.get("content-length", ""))
    if size > limits.max_body_bytes:  # said up front; a chunked body is measured as it arrives
        detail = f"the file is larger than the limit of {settings.MAX_UPLOAD_BYTES} bytes"
        raise HTTPException(413, detail, headers=STOP_READING)
    used = await run_in_transaction(backends.sessions, jobs.stored_bytes, caller.username)
    check_quota(used, max(0, size - UPLOAD_OVERHEAD), settings.USER_QUOTA_BYTES)
    try:
        stored = await store_upload(
            request.stream(), request.headers.get("content-type", ""), backends.videos, limits
        )
    except UploadError as exc:
        raise HTTPException(exc.status, exc.detail, headers=STOP_READING) from exc
    try:
        check_quota(used, stored.blob.size, settings.USER_QUOTA_BYTES)
        options = parse_options(stored.fields)
        webhook_url = checked_webhook(settings, options)
        # The file name was made safe and short when it arrived (alchemist.filenames).
        check_lengths(owner=caller.username, filename=stored.blob.filename, webhook_url=webhook_url)
        job = await run_in_transaction(
            backends.sessions, record_upload, settings, owner=caller.username, filename=stored.blob.filename,
            video_fid=stored.blob.id, video_bytes=stored.blob.size,
            webhook_url=webhook_url,
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


def declared_length(header: str) -> int:
    """The Content-Length as a number (0 when absent or not ASCII digits; huge when too long)."""
    if not header.isascii() or not header.isdigit():
        return 0  # h11 refuses such a header before we see it; a proxy might not
    return int(header) if len(header) <= MAX_DECLARED_DIGITS else 10**MAX_DECLARED_DIGITS


def check_lengths(**values: str | None) -> None:
    """400 naming a value longer than its job column, before the database sees (and refuses) it."""
    for name, value in values.items():
        limit = getattr(Job.__table__.c[name].type, "length", None)
        if value is not None and limit is not None and len(value) > limit:
            raise HTTPException(400, f"{name}: at most {limit} characters (this one has {len(value)})")


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


def checked_webhook(settings: Settings, options: UploadOptions) -> str | None:
    """The upload's webhook URL, or a 400 when this server cannot or may not call it.

    Only literal addresses and loopback names are judged here; names are resolved and checked
    again at every delivery (netguard), since what DNS answers can change.
    """
    if options.webhook_url is None:
        return None
    if settings.webhook_key() is None:
        raise HTTPException(400, "webhooks are not configured on this server (WEBHOOK_SECRET is not set)")
    url = str(options.webhook_url)
    try:
        netguard.check_url(url, settings.webhook_networks)
    except netguard.ForbiddenAddress as exc:
        raise HTTPException(400, f"webhook_url: {exc}") from exc
    return url


def describe_validation(exc: ValidationError) -> str:
    """One sentence per problem, naming the field."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])[:MAX_SHOWN_NAME] or "body"  # a name may be long
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
