"""Request and response models of the gateway's API (they are its OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

JobStatusName = Literal["queued", "converting", "done", "failed", "expired"]


class ErrorOut(BaseModel):
    """Every error: one readable sentence."""

    detail: str = Field(examples=["no job 'abc'"])


class Job(BaseModel):
    """One upload and its conversion."""

    id: str
    filename: str
    owner: str
    status: JobStatusName
    progress: float = Field(ge=0, le=1, description="0 to 1")
    video_fid: str | None = Field(description="The upload's id; null once it was deleted after conversion")
    mp3_fid: str | None = Field(description="The output's id (the seeds' name; any format)")
    error: str | None = Field(description="Why the job failed, in words")
    warning: str | None
    attempts: int
    duration: float | None = Field(description="Seconds of audio in the output")
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = Field(description="When the output will be deleted (RETENTION_DAYS)")
    download_url: str | None = Field(
        description="A signed link that downloads the output with no header (done jobs only)"
    )


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    jobs: list[Job]
    total: int
    limit: int
    offset: int


class UploadAccepted(BaseModel):
    """The upload is stored and its conversion queued."""

    job_id: str
    video_fid: str
    status: JobStatusName
    events: str = Field(description="Server-sent events of this job")
    job: str = Field(description="This job in the API (also the Location header)")


class UploadOptions(BaseModel):
    """The form fields `POST /upload` accepts besides `file` (the page renders these)."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: AnyHttpUrl | None = Field(
        default=None,
        title="Webhook URL",
        description=(
            "Called (POST, a Standard Webhooks signature) with a job.done or job.failed event and "
            "the job's JSON when the conversion ends; it must be a public http(s) address"
        ),
        max_length=2048,
    )


class OptionField(BaseModel):
    """One upload option, described for a form."""

    name: str
    label: str
    type: Literal["string", "integer", "number", "boolean", "choice"]
    choices: list[str] | None = None
    default: Any = None
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False


class OptionList(BaseModel):
    """The upload options, in form order."""

    fields: list[OptionField]


class SignIn(BaseModel):
    """Email and password from the sign-in form."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(BaseModel):
    """Who is signed in, and the token the page sends as X-CSRF-Token."""

    username: str
    admin: bool
    csrf_token: str
    expires_at: datetime


class User(BaseModel):
    """A person who may sign in."""

    email: str
    admin: bool
    created_at: datetime | None


class UserList(BaseModel):
    """Every user, oldest first."""

    users: list[User]


class NewUser(BaseModel):
    """An account to create."""

    model_config = ConfigDict(extra="forbid")

    # Lengths beyond these bounds are auth's to judge (a 400 with its own words).
    email: str = Field(max_length=255)
    password: str = Field(max_length=1024)
    admin: bool = False


class NewPassword(BaseModel):
    """A password to set."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=1024)


class Health(BaseModel):
    """The process answers."""

    status: str


class Features(BaseModel):
    """What this server offers, as its operator configured it (the page adapts to it)."""

    api_docs: bool = Field(description="/docs and /openapi.json are served (API_DOCS)")
    webhooks: bool = Field(description="Uploads may ask for a webhook (WEBHOOK_SECRET is set)")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, each with the ErrorOut model."""
    described = {
        400: "The request is malformed; the detail says what is wrong",
        401: "No credentials (send a Bearer token or sign in)",
        403: "The token, session, CSRF token or link is invalid, or you are not an admin",
        404: "Not found, or not yours",
        409: "It exists already",
        413: "The upload is larger than MAX_UPLOAD_BYTES",
        416: "The Range cannot be satisfied",
        422: "A parameter or the JSON body is invalid; the detail names it",
        429: "Too many failed logins; see Retry-After",
        503: "A backend is unavailable; see Retry-After",
    }
    return {code: {"model": ErrorOut, "description": described[code]} for code in codes}
