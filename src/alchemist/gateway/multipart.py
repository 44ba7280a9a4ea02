"""Stream a multipart upload straight into a BlobStore, one file part, nothing buffered whole."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath

from python_multipart.multipart import MultipartParser, parse_options_header

from alchemist.storage.base import BlobInfo, BlobStore, BlobTooLargeError, put_async

MAX_FIELD_BYTES = 4096


class UploadError(Exception):
    """The upload is malformed; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)


class MultipartStream:
    """Turns the request body into events: ('part', headers), ('data', bytes), ('end', None)."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes) -> None:
        self._body = body
        self._events: collections.deque[tuple[str, object]] = collections.deque()
        self._field, self._value = b"", b""
        self._part = _Part()
        self._finished = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": lambda: self._events.append(("part_end", None)),
                "on_end": self._on_end,
            },
        )

    async def next_event(self) -> tuple[str, object]:
        """The next event; UploadError when the body ends early or is not multipart."""
        while not self._events:
            if self._finished:
                return ("end", None)
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                if self._finished:
                    return ("end", None)
                raise UploadError(400, "the multipart body ended before its closing boundary") from None
            try:
                self._parser.write(chunk)
            except Exception as exc:  # python-multipart raises its own errors on bad input
                raise UploadError(400, f"malformed multipart body: {exc}") from exc
        return self._events.popleft()

    async def part_data(self) -> AsyncIterator[bytes]:
        """The data of the current part, until it ends."""
        while True:
            kind, value = await self.next_event()
            if kind == "data":
                yield value  # type: ignore[misc]
            elif kind == "part_end":
                return
            else:
                raise UploadError(400, "malformed multipart body: part ended unexpectedly")

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _on_headers_finished(self) -> None:
        self._events.append(("part", self._part.headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", bytes(data[start:end])))

    def _on_end(self) -> None:
        self._finished = True


@dataclass
class Upload:
    """The stored file and the text fields that came with it."""

    blob: BlobInfo
    fields: dict[str, str]


async def store_upload(
    body: AsyncIterator[bytes], content_type: str, store: BlobStore, max_bytes: int
) -> Upload:
    """Store the one `file` part; anything else wrong is an UploadError, with nothing stored."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(400, "send the video as multipart/form-data in the field 'file'")
    stream = MultipartStream(body, boundary)
    stored: BlobInfo | None = None
    fields: dict[str, str] = {}
    try:
        while (event := await stream.next_event())[0] != "end":
            kind_name, headers = event
            if kind_name != "part":
                continue
            name, filename, part_type = _describe(headers)  # type: ignore[arg-type]
            if filename is None:
                fields[name] = await _read_field(stream, name)
                continue
            if name != "file":
                raise UploadError(400, f"unexpected file field {name!r}: send the video as 'file'")
            if stored is not None:
                raise UploadError(400, "send exactly one file per upload (got two)")
            try:
                stored = await put_async(
                    store, stream.part_data(), filename=filename, content_type=part_type,
                    max_bytes=max_bytes,
                )  # fmt: skip
            except BlobTooLargeError as exc:
                raise UploadError(413, f"the file is larger than the limit of {max_bytes} bytes") from exc
    except BaseException:
        if stored is not None:
            store.delete(stored.id)
        raise
    if stored is None:
        raise UploadError(400, "no file: send the video in the multipart field 'file'")
    if stored.size == 0:
        store.delete(stored.id)
        raise UploadError(400, "the file is empty")
    return Upload(stored, fields)


def _describe(headers: dict[bytes, bytes]) -> tuple[str, str | None, str]:
    _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
    name = disposition.get(b"name", b"").decode("utf-8", "replace")
    raw = disposition.get(b"filename")
    filename = None
    if raw is not None:
        text = raw.decode("utf-8", "replace")
        # Some clients send a full path; keep the last component, whatever the separator.
        filename = PureWindowsPath(PurePosixPath(text).name).name.strip() or "upload"
    part_type = headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
    return name, filename, part_type


async def _read_field(stream: MultipartStream, name: str) -> str:
    value = b""
    async for piece in stream.part_data():
        value += piece
        if len(value) > MAX_FIELD_BYTES:
            raise UploadError(400, f"field {name!r} is longer than {MAX_FIELD_BYTES} bytes")
    return value.decode("utf-8", "replace")
