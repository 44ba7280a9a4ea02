"""The BlobStore interface: streaming put/get of large files, with ids as strings."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK = 1 << 20
Chunks = Iterable[bytes] | BinaryIO


class BlobError(Exception):
    """Base of storage errors."""


class BlobNotFoundError(BlobError):
    """No blob has this id (a malformed id included: it can never exist)."""


class BlobTooLargeError(BlobError):
    """The stream passed the size limit; nothing was stored."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the file is larger than the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


@dataclass(frozen=True)
class BlobInfo:
    """What is known about a stored blob."""

    id: str
    size: int
    content_type: str
    filename: str
    created: datetime


@runtime_checkable
class BlobStore(Protocol):
    """Blocking storage of large files; async callers run it in a thread (see put_async)."""

    def put(
        self,
        data: Chunks,
        *,
        filename: str,
        content_type: str,
        max_bytes: int | None = None,
        blob_id: str | None = None,
    ) -> BlobInfo:
        """Store a stream (under blob_id when given); past max_bytes nothing is stored."""
        ...

    def new_id(self) -> str:
        """A fresh id this store accepts, to name a blob before writing it."""
        ...

    def open(self, blob_id: str) -> BinaryIO:
        """A seekable reader of the blob's bytes; BlobNotFoundError when absent."""
        ...

    def stat(self, blob_id: str) -> BlobInfo:
        """The blob's size, type, name and creation time; BlobNotFoundError when absent."""
        ...

    def delete(self, blob_id: str) -> bool:
        """Remove the blob; False when it was not there."""
        ...

    def ping(self) -> None:
        """Raise when the backend is unreachable."""
        ...

    def list(self) -> Iterator[BlobInfo]:
        """Every stored blob (for audits: orphans are blobs no job refers to)."""
        ...

    def purge_partial(self, older_than: datetime, *, dry_run: bool = False) -> int:
        """Remove pieces of writes that never finished (a crash mid-upload) older than that; how many."""
        ...


def exists(store: BlobStore, blob_id: str) -> bool:
    """True when the blob is stored."""
    try:
        store.stat(blob_id)
    except BlobNotFoundError:
        return False
    return True


def iter_chunks(data: Chunks) -> Iterator[bytes]:
    """The chunks of an iterable of bytes or of a binary file object."""
    read = getattr(data, "read", None)
    if read is None:
        yield from data
        return
    while chunk := read(CHUNK):
        yield chunk


def iter_range(store: BlobStore, blob_id: str, start: int, end: int) -> Iterator[bytes]:
    """Bytes start..end (inclusive, as in HTTP Range) of a blob, in chunks."""
    with store.open(blob_id) as reader:
        reader.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = reader.read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


_END = object()
_ABORT = object()


class UploadAbortedError(BlobError):
    """The incoming stream failed part-way; the partial blob was discarded."""


async def put_async(
    store: BlobStore,
    chunks: AsyncIterable[bytes],
    *,
    filename: str,
    content_type: str,
    max_bytes: int | None = None,
) -> BlobInfo:  # an async stream always gets a new id
    """Store an async byte stream: a thread writes while the loop feeds it a small queue."""
    handoff: queue.Queue[object] = queue.Queue(maxsize=8)
    writer_done = threading.Event()

    def produced() -> Iterator[bytes]:
        while (item := handoff.get()) is not _END:
            if item is _ABORT:
                raise UploadAbortedError("the upload stream ended with an error")
            yield item  # type: ignore[misc]

    def write() -> BlobInfo:
        try:
            return store.put(produced(), filename=filename, content_type=content_type, max_bytes=max_bytes)
        finally:
            writer_done.set()

    writer = asyncio.ensure_future(asyncio.to_thread(write))
    try:
        async for chunk in chunks:
            if not await _hand_over(handoff, chunk, writer_done):
                break  # the writer stopped early (e.g. too large): its error is raised below
        await _hand_over(handoff, _END, writer_done)
    except BaseException:
        # Make the writer discard what it has, wait for that, then report the real error.
        await _hand_over(handoff, _ABORT, writer_done)
        with contextlib.suppress(BaseException):
            await writer
        raise
    return await writer


async def _hand_over(handoff: queue.Queue[object], item: object, done: threading.Event) -> bool:
    """Queue one item for the writer; False when the writer has already finished."""
    while not done.is_set():
        try:
            handoff.put_nowait(item)
            return True
        except queue.Full:
            await asyncio.sleep(0.002)
    return False
