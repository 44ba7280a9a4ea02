"""FileStore: blobs as files under a directory, written atomically, ids that can't escape."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from alchemist.storage.base import (
    BlobInfo,
    BlobNotFoundError,
    BlobTooLargeError,
    Chunks,
    iter_chunks,
)

BLOB_ID = re.compile(r"^[0-9a-f]{32}$")


class FileStore:
    """Blobs in `root/<id[:2]>/<id>` with a JSON sidecar; a crash never leaves a half file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._incoming = root / ".incoming"
        self._incoming.mkdir(parents=True, exist_ok=True)

    def new_id(self) -> str:
        """32 random hex digits."""
        return uuid.uuid4().hex

    def put(
        self,
        data: Chunks,
        *,
        filename: str,
        content_type: str,
        max_bytes: int | None = None,
        blob_id: str | None = None,
    ) -> BlobInfo:
        """Write to a temp name, fsync, then rename into place (data last, so it's all or none)."""
        blob_id = blob_id or self.new_id()
        self._paths(blob_id)  # refuses an id that isn't one
        fd, temp = tempfile.mkstemp(dir=self._incoming, prefix=blob_id)
        try:
            size = 0
            with os.fdopen(fd, "wb") as handle:
                for chunk in iter_chunks(data):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise BlobTooLargeError(max_bytes)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            info = BlobInfo(
                id=blob_id, size=size, content_type=content_type, filename=filename,
                created=datetime.now(timezone.utc),
            )  # fmt: skip
            data_path, meta_path = self._paths(blob_id)
            data_path.parent.mkdir(exist_ok=True)
            _write_atomically(meta_path, _to_json(info).encode(), self._incoming)
            os.replace(temp, data_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return info

    def open(self, blob_id: str) -> BinaryIO:
        """The blob's file, opened for reading (seekable)."""
        data_path, _ = self._paths(blob_id)
        try:
            return data_path.open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFoundError(blob_id) from exc

    def stat(self, blob_id: str) -> BlobInfo:
        """Size, type, name and creation time."""
        data_path, meta_path = self._paths(blob_id)
        try:
            meta = json.loads(meta_path.read_text())
            size = data_path.stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFoundError(blob_id) from exc
        return BlobInfo(
            id=blob_id, size=size, content_type=meta["content_type"], filename=meta["filename"],
            created=datetime.fromisoformat(meta["created"]),
        )  # fmt: skip

    def delete(self, blob_id: str) -> bool:
        """Remove the data (first: it's what makes a blob exist) and then its sidecar."""
        try:
            data_path, meta_path = self._paths(blob_id)
        except BlobNotFoundError:
            return False
        try:
            data_path.unlink()
        except FileNotFoundError:
            meta_path.unlink(missing_ok=True)
            return False
        meta_path.unlink(missing_ok=True)
        return True

    def ping(self) -> None:
        """The directory is there and writable."""
        if not os.access(self._incoming, os.W_OK):
            raise OSError(f"{self._incoming} is not writable")

    def list(self) -> Iterator[BlobInfo]:
        """Every complete blob under the root (sidecars and temp files are not blobs)."""
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder == self._incoming:
                continue
            for path in sorted(folder.iterdir()):
                if BLOB_ID.fullmatch(path.name):
                    with contextlib.suppress(BlobNotFoundError):  # deleted meanwhile
                        yield self.stat(path.name)

    def purge_partial(self, older_than: datetime, *, dry_run: bool = False) -> int:
        """Temp files of writes that died, and sidecars whose data never arrived."""
        cutoff = older_than.timestamp()
        stale = [p for p in self._incoming.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]
        for folder in self.root.iterdir():
            if folder.is_dir() and folder != self._incoming:
                stale += [
                    sidecar
                    for sidecar in folder.glob("*.json")
                    if not sidecar.with_suffix("").exists() and sidecar.stat().st_mtime < cutoff
                ]
        if not dry_run:
            for path in stale:
                path.unlink(missing_ok=True)
        return len(stale)

    def _paths(self, blob_id: str) -> tuple[Path, Path]:
        # Only 32 lower-case hex digits are ids: nothing else can name a path.
        if not isinstance(blob_id, str) or not BLOB_ID.fullmatch(blob_id):
            raise BlobNotFoundError(blob_id)
        folder = self.root / blob_id[:2]
        return folder / blob_id, folder / f"{blob_id}.json"


def _to_json(info: BlobInfo) -> str:
    return json.dumps(
        {"filename": info.filename, "content_type": info.content_type,
         "created": info.created.isoformat(), "size": info.size}
    )  # fmt: skip


def _write_atomically(path: Path, content: bytes, scratch: Path) -> None:
    fd, temp = tempfile.mkstemp(dir=scratch)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
