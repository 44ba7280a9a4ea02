"""Describe media files and remux MP3 audio through the long-lived reader child."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from alchemist.converter.errors import (
    ConversionFailedError,
    EngineUnavailableError,
    NotMediaError,
    TooLongError,
)

logger = logging.getLogger(__name__)
# FFmpeg's words name errno values, /proc/N/fd paths and demuxer lists: noise (and internals)
# to the owner of a job, who reads this reason.
_NOISE = (re.compile(r"\[Errno -?\d+\]\s*"), re.compile(r":?\s*'[^']*'"), re.compile(r"\[[\w,]+\]\s*"))


def readable(message: str) -> str:
    """FFmpeg's error message without paths, errno codes and demuxer names."""
    for pattern in _NOISE:
        message = pattern.sub("", message)
    message = message.replace("; last error log:", ":").strip(" ;:")
    return message or "unreadable"


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream of the source."""

    index: int
    codec: str
    channels: int
    sample_rate: int
    default: bool
    tags: dict[str, str] = field(default_factory=dict)
    duration: float | None = None


@dataclass(frozen=True)
class MediaInfo:
    """The source's container format, duration, tags and audio tracks."""

    format: str
    duration: float | None
    tags: dict[str, str]
    audio: list[AudioTrack]
    has_video: bool
    stream_count: int

    def chosen_track(self) -> AudioTrack | None:
        """The default audio track, else the first one."""
        defaults = [track for track in self.audio if track.default]
        candidates = defaults or self.audio
        return candidates[0] if candidates else None


class MediaReader:
    """Client of one reader child, restarted after a crash or a hang."""

    def __init__(self, timeout: float = 20, memory_bytes: int = 2 << 30, output_bytes: int = 1 << 30) -> None:
        self._timeout = timeout
        self._memory_bytes = memory_bytes
        self._output_bytes = output_bytes
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def probe(self, path: str) -> MediaInfo:
        """Describe the file; NotMediaError when it can't be read as accepted media."""
        request = {"op": "describe", "path": os.path.abspath(path), "timeout": self._timeout}
        with self._lock:
            answer = self._ask(request)
        if not answer["ok"]:
            logger.info("probe of %s failed: %s", path, answer["message"])
            raise NotMediaError(f"not a media file in a supported format ({readable(answer['message'])})")
        audio = [AudioTrack(**track) for track in answer["audio"]]
        return MediaInfo(
            format=answer["format"],
            duration=answer["duration"],
            tags=answer["tags"],
            audio=audio,
            has_video=answer["has_video"],
            stream_count=answer["stream_count"],
        )

    def remux(
        self, path: str, index: int, destination: str, tags: dict[str, str], max_seconds: float | None = None
    ) -> float:
        """Copy MP3 track `index` into an MP3 file with these tags; seconds of audio copied.

        TooLongError as soon as what is copied passes `max_seconds`, whatever the file claimed.
        """
        request = {
            "op": "remux", "path": os.path.abspath(path), "index": index,
            "destination": destination, "tags": tags, "timeout": self._timeout,
            "max_seconds": max_seconds,
        }  # fmt: skip
        with self._lock:
            answer = self._ask(request)
        if not answer["ok"] and answer["error"] == "too_long":
            raise TooLongError(f"the copied audio passed {max_seconds or 0:.1f} s")
        if not answer["ok"]:
            raise ConversionFailedError(f"copying the MP3 audio failed: {answer['message']}")
        return float(answer["seconds"])

    def close(self) -> None:
        """Stop the reader child."""
        with self._lock:
            self._stop()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        process = self._running()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.flush()
        except BrokenPipeError as exc:
            self._stop()
            raise EngineUnavailableError("the media reader stopped unexpectedly") from exc
        line = self._read_line(process)
        if line is None:
            self._stop()
            raise ConversionFailedError(
                "the media reader crashed or hung on this file; it cannot be converted"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _read_line(self, process: subprocess.Popen[bytes]) -> bytes | None:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        buffer = b""
        deadline = time.monotonic() + self._timeout + 5
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buffer += chunk
        return buffer

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "alchemist.converter.reader_child",
                    str(self._memory_bytes),
                    str(self._output_bytes),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self._process

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
