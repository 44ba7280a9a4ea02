"""Stream a multipart upload straight into a BlobStore, one file part, nothing buffered whole.

Every cap is checked as the bytes arrive, with or without a Content-Length: the whole body,
the number of parts, each field's size and all that is not the file (fields, part headers,
boundaries). Past one, reading stops and the upload is refused; nothing stays stored.
"""

from __future__ import annotations

import collections
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from python_multipart.multipart import MultipartParser, parse_options_header

from alchemist.filenames import sanitize_filename
from alchemist.storage.base import BlobInfo, BlobStore, BlobTooLargeError, put_async

MAX_PARTS = 32  # the file and every option field, with room to spare
MAX_FIELD_BYTES = 4096
# Everything but the file's own bytes: fields, part headers, boundaries. It is also the slack
# the whole body may have on top of MAX_UPLOAD_BYTES.
MAX_NON_FILE_BYTES = 64 * 1024
MAX_PART_HEADERS = 8  # Content-Disposition, Content-Type and a few a client may add
MAX_PART_HEADER_BYTES = 8192  # one header line: room for a 1000-character name before it is cut
MAX_SHOWN_NAME = 64  # of a field's name quoted back in an error
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# type/subtype[; parameters] in printable ASCII: anything else is not kept as the blob's type.
CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;[\x20-\x7e]*)?$", re.ASCII)
MAX_CONTENT_TYPE = 255


class UploadError(Exception):
    """The upload is malformed or too large; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class FormLimits:
    """The caps of one upload; `max_file_bytes` is MAX_UPLOAD_BYTES."""

    max_file_bytes: int
    max_parts: int = MAX_PARTS
    max_field_bytes: int = MAX_FIELD_BYTES
    max_non_file_bytes: int = MAX_NON_FILE_BYTES

    @property
    def max_body_bytes(self) -> int:
        """The largest body that can hold a file within its limit and fields within theirs."""
        return self.max_file_bytes + self.max_non_file_bytes


@dataclass
class _Part:
    """The part being parsed: its headers, and its value when it is a field (not the file)."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


class MultipartStream:
    """Turns the request body into events, enforcing the caps as each chunk arrives.

    Events: ('file', (name, filename, content_type)), then ('data', bytes)... ('part_end', None);
    ('field', (name, value)) for each text field; ('end', None) after the closing boundary.
    """

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes, limits: FormLimits) -> None:
        self._body = body
        self._limits = limits
        self._events: collections.deque[tuple[str, object]] = collections.deque()
        self._header_field, self._header_value = b"", b""
        self._part = _Part()
        self._parts = 0
        self._received = 0  # bytes of the body so far
        self._file_bytes = 0  # of which the file's own data
        self._finished = False
        try:
            self._parser = MultipartParser(
                boundary,
                callbacks={
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
                max_header_count=MAX_PART_HEADERS,
                max_header_size=MAX_PART_HEADER_BYTES,
            )
        except Exception as exc:  # an over-long boundary
            raise UploadError(400, f"malformed multipart body: {exc}") from exc

    async def next_event(self) -> tuple[str, object]:
        """The next event; UploadError when the body ends early, is not multipart or passes a cap."""
        while not self._events:
            if self._finished:
                return ("end", None)
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                if self._finished:
                    return ("end", None)
                raise UploadError(400, "the multipart body ended before its closing boundary") from None
            self._received += len(chunk)
            if self._received > self._limits.max_body_bytes:
                raise UploadError(413, self._too_large())
            try:
                self._parser.write(chunk)
            except UploadError:
                raise  # a cap, from one of the callbacks below
            except Exception as exc:  # python-multipart raises its own errors on bad input
                raise UploadError(400, f"malformed multipart body: {exc}") from exc
            # Whatever the parser has not handed out as file data is form overhead (a boundary
            # it holds back to look behind is counted early: a few hundred bytes at most).
            if self._received - self._file_bytes > self._limits.max_non_file_bytes:
                raise UploadError(
                    400,
                    f"the form's fields, part headers and boundaries take more than "
                    f"{self._limits.max_non_file_bytes} bytes",
                )
        return self._events.popleft()

    async def part_data(self) -> AsyncIterator[bytes]:
        """The data of the current file part, until it ends."""
        while True:
            kind, value = await self.next_event()
            if kind == "data":
                yield value  # type: ignore[misc]
            elif kind == "part_end":
                return
            else:
                raise UploadError(400, "malformed multipart body: part ended unexpectedly")

    def _too_large(self) -> str:
        # The rest of the body is capped (400) below the slack: what overflows is the file.
        return f"the file is larger than the limit of {self._limits.max_file_bytes} bytes"

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._limits.max_parts:
            raise UploadError(400, f"too many parts: at most {self._limits.max_parts} fields and files")
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _on_headers_finished(self) -> None:
        name, filename, content_type = describe_part(self._part.headers)
        self._part.name = name
        if filename is not None:
            self._part.is_file = True
            self._events.append(("file", (name, filename, content_type)))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.is_file:
            self._file_bytes += end - start
            self._events.append(("data", bytes(data[start:end])))
            return
        self._part.value += data[start:end]
        if len(self._part.value) > self._limits.max_field_bytes:
            shown = self._part.name[:MAX_SHOWN_NAME]
            raise UploadError(400, f"field {shown!r} is longer than {self._limits.max_field_bytes} bytes")

    def _on_part_end(self) -> None:
        if self._part.is_file:
            self._events.append(("part_end", None))
        else:
            self._events.append(("field", (self._part.name, self._part.value.decode("utf-8", "replace"))))

    def _on_end(self) -> None:
        self._finished = True


@dataclass
class Upload:
    """The stored file and the text fields that came with it."""

    blob: BlobInfo
    fields: dict[str, str]


async def store_upload(
    body: AsyncIterator[bytes], content_type: str, store: BlobStore, limits: FormLimits
) -> Upload:
    """Store the one `file` part; anything else wrong is an UploadError, with nothing stored."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(400, "send the video as multipart/form-data in the field 'file'")
    stream = MultipartStream(body, boundary, limits)
    stored: BlobInfo | None = None
    fields: dict[str, str] = {}
    try:
        while (event := await stream.next_event())[0] != "end":
            kind_name, value = event
            if kind_name == "field":
                name, text = cast(tuple[str, str], value)
                if name in fields:
                    raise UploadError(400, f"field {name[:MAX_SHOWN_NAME]!r} is given twice")
                fields[name] = text
                continue
            if kind_name != "file":
                continue
            name, filename, part_type = cast(tuple[str, str, str], value)
            if name != "file":
                raise UploadError(
                    400, f"unexpected file field {name[:MAX_SHOWN_NAME]!r}: send the video as 'file'"
                )
            if stored is not None:
                raise UploadError(400, "send exactly one file per upload (got two)")
            try:
                stored = await put_async(
                    store, stream.part_data(), filename=filename, content_type=part_type,
                    max_bytes=limits.max_file_bytes,
                )  # fmt: skip
            except BlobTooLargeError as exc:
                raise UploadError(
                    413, f"the file is larger than the limit of {limits.max_file_bytes} bytes"
                ) from exc
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


def describe_part(headers: dict[bytes, bytes]) -> tuple[str, str | None, str]:
    """The part's field name, its file name made safe (None for a text field) and content type."""
    _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
    name = disposition.get(b"name", b"").decode("utf-8", "replace")
    raw = disposition.get(b"filename")
    filename = None if raw is None else sanitize_filename(raw.decode("utf-8", "replace"))
    part_type = headers.get(b"content-type", b"").decode("latin-1").strip()
    if len(part_type) > MAX_CONTENT_TYPE or not CONTENT_TYPE.match(part_type):
        part_type = DEFAULT_CONTENT_TYPE  # only ever stored and shown, never trusted
    return name, filename, part_type
