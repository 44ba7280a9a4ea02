"""Message schemas shared by the services (the seeds' field names plus the job id)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ValidationError

__all__ = ["Mp3Ready", "ValidationError", "VideoUploaded"]


class VideoUploaded(BaseModel):
    """Published to VIDEO_QUEUE by the gateway after an upload is stored and recorded."""

    job_id: str
    video_fid: str
    mp3_fid: None = None
    username: str

    def to_body(self) -> dict[str, Any]:
        """The JSON body."""
        return self.model_dump()


class Mp3Ready(BaseModel):
    """Published to MP3_QUEUE by the converter when a job ends (done or failed)."""

    job_id: str
    video_fid: str
    mp3_fid: str | None
    username: str
    status: Literal["done", "failed"] = "done"
    error: str | None = None

    def to_body(self) -> dict[str, Any]:
        """The JSON body."""
        return self.model_dump()
