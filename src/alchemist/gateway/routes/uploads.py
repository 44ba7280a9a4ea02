"""POST /upload (the seeds' route) and the options it accepts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from alchemist import jobs
from alchemist.db.engine import run_in_transaction
from alchemist.gateway.deps import BackendsDep, CallerDep, SettingsDep
from alchemist.gateway.lifecycle import forget_job
from alchemist.gateway.multipart import UploadError, store_upload
from alchemist.gateway.schemas import OptionField, OptionList, UploadAccepted, UploadOptions, errors
from alchemist.messaging.base import PublishError
from alchemist.messaging.messages import VideoUploaded

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
    request: Request, response: Response, caller: CallerDep, backends: BackendsDep, settings: SettingsDep
) -> UploadAccepted:
    """Upload a video (multipart field `file`, options as fields); its conversion is queued."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.MAX_UPLOAD_BYTES + UPLOAD_OVERHEAD:
        raise HTTPException(413, f"the file is larger than the limit of {settings.MAX_UPLOAD_BYTES} bytes")
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
        options = parse_options(stored.fields)
        job = await run_in_transaction(
            backends.sessions,
            jobs.create_job,
            owner=caller.username,
            filename=stored.blob.filename,
            video_fid=stored.blob.id,
            video_bytes=stored.blob.size,
            webhook_url=str(options.webhook_url) if options.webhook_url else None,
        )
    except BaseException:
        await run_in_threadpool(backends.videos.delete, stored.blob.id)  # nothing half-stored
        raise
    message = VideoUploaded(job_id=job.id, video_fid=job.video_fid, username=job.owner)
    try:
        await backends.broker.publish(settings.VIDEO_QUEUE, message.to_body(), message_id=f"{job.id}.video")
    except PublishError as exc:
        await run_in_threadpool(forget_job, backends, job)
        raise HTTPException(
            503, f"could not queue the conversion, nothing was kept: {exc}", headers={"Retry-After": "5"}
        ) from exc
    location = f"/api/v1/jobs/{job.id}"
    response.headers["Location"] = location
    return UploadAccepted(
        job_id=job.id, video_fid=job.video_fid, status="queued", events=f"{location}/events", job=location
    )


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
