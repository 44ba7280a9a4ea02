"""Temporary files for streams that ffmpeg can't seek, in a directory with a byte budget."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from alchemist.converter.errors import EngineUnavailableError

CHUNK = 1 << 20


class SpoolDirectory:
    """Spools streams to files; all spooled files together stay under `max_bytes`."""

    def __init__(self, directory: Path | None, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._used = 0
        self._lock = threading.Lock()

    @contextmanager
    def readable_path(self, stream: BinaryIO) -> Iterator[str]:
        """A path with the stream's bytes: the open file itself when it is one, else a copy."""
        local = _open_file_path(stream)
        if local is not None:
            yield local
            return
        with self._temp_file(".in") as (path, handle):
            reserved = 0
            try:
                while chunk := stream.read(CHUNK):
                    self._reserve(len(chunk))
                    reserved += len(chunk)
                    handle.write(chunk)
                handle.close()
                yield path
            finally:
                self._release(reserved)

    @contextmanager
    def writable_path(self) -> Iterator[str]:
        """A fresh temp path to write output to before it is copied into a stream."""
        with self._temp_file(".mp3") as (path, handle):
            handle.close()
            yield path

    @contextmanager
    def _temp_file(self, suffix: str) -> Iterator[tuple[str, BinaryIO]]:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="alchemist-", suffix=suffix, dir=self.directory)
        handle = os.fdopen(fd, "wb")
        try:
            yield path, handle
        finally:
            handle.close()
            Path(path).unlink(missing_ok=True)

    def _reserve(self, size: int) -> None:
        with self._lock:
            if self._used + size > self.max_bytes:
                raise EngineUnavailableError(
                    f"spool directory is full ({self.max_bytes} bytes in use); try again later"
                )
            self._used += size

    def _release(self, size: int) -> None:
        with self._lock:
            self._used -= size


def _open_file_path(stream: BinaryIO) -> str | None:
    """A path ffmpeg can open for a stream that is a regular file on disk, else None."""
    try:
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
    except (AttributeError, OSError, ValueError):
        return None
    # Opening /proc/PID/fd/N reopens the same file, with its own offset, in any process.
    return f"/proc/{os.getpid()}/fd/{fd}"


def copy_file_to_stream(path: str, destination: BinaryIO) -> None:
    """Copy a file into a writable stream in chunks."""
    with open(path, "rb") as source:
        shutil.copyfileobj(source, destination, CHUNK)
