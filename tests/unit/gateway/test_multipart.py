"""The streaming multipart parser: caps checked as the bytes arrive, nothing left stored on refusal."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest

from alchemist.gateway.multipart import (
    MAX_FIELD_BYTES,
    MAX_NON_FILE_BYTES,
    MAX_PART_HEADER_BYTES,
    MAX_PARTS,
    FormLimits,
    UploadError,
    store_upload,
)
from alchemist.storage.files import FileStore

BOUNDARY = "XyZ"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
LIMITS = FormLimits(max_file_bytes=1 << 20)


def field(name: str, value: bytes, *headers: bytes) -> bytes:
    """One text field part (without its closing boundary)."""
    extra = b"".join(header + b"\r\n" for header in headers)
    return (
        f"--{BOUNDARY}\r\n".encode()
        + f'Content-Disposition: form-data; name="{name}"\r\n'.encode()
        + extra
        + b"\r\n"
        + value
        + b"\r\n"
    )


def file_part(data: bytes, filename: bytes = b"clip.mp4", content_type: bytes = b"video/mp4") -> bytes:
    """The `file` part."""
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        + b"Content-Type: " + content_type + b"\r\n\r\n"
        + data
        + b"\r\n"
    )  # fmt: skip


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class Body:
    """An async body in chunks that counts what the parser pulled from it."""

    def __init__(self, pieces: Iterable[bytes], chunk: int = 8192) -> None:
        self._pieces, self._chunk = pieces, chunk
        self.pulled = 0

    def _chunks(self) -> Iterator[bytes]:
        buffer = b""
        for piece in self._pieces:
            buffer += piece
            while len(buffer) >= self._chunk:
                yield buffer[: self._chunk]
                buffer = buffer[self._chunk :]
        if buffer:
            yield buffer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks():
            self.pulled += len(chunk)
            yield chunk


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "videos")


def everything_in(store: FileStore) -> list[Path]:
    """Every file the store holds, temp files included."""
    return sorted(path for path in store.root.rglob("*") if path.is_file())


async def upload(store: FileStore, body: Body, limits: FormLimits = LIMITS) -> UploadError:
    """Expect a refusal; check that nothing at all was stored."""
    with pytest.raises(UploadError) as refused:
        await store_upload(aiter(body), CONTENT_TYPE, store, limits)
    assert everything_in(store) == []
    return refused.value


@pytest.mark.parametrize("chunk", [1, 7, 8192])
async def test_a_file_and_its_fields_are_read_in_any_chunking(store: FileStore, chunk: int) -> None:
    data = bytes(range(256)) * 40 + f"\r\n--{BOUNDARY}".encode()[:-1]  # almost a boundary inside
    body = Body([form(field("webhook_url", b"https://example.com/h"), file_part(data))], chunk)
    stored = await store_upload(aiter(body), CONTENT_TYPE, store, LIMITS)
    assert stored.fields == {"webhook_url": "https://example.com/h"}
    assert stored.blob.filename == "clip.mp4" and stored.blob.content_type == "video/mp4"
    with store.open(stored.blob.id) as handle:
        assert handle.read() == data


async def test_the_file_name_is_made_safe_as_it_arrives(store: FileStore) -> None:
    body = Body(
        [form(file_part(b"abc", filename=b"../a\nb\x00\xe2\x80\xaec.mp4", content_type=b"\xff/\x01"))]
    )
    stored = await store_upload(aiter(body), CONTENT_TYPE, store, LIMITS)
    assert stored.blob.filename == "a bc.mp4"
    assert stored.blob.content_type == "application/octet-stream"  # not a media type: not kept


def tiny_fields(count: int) -> Iterator[bytes]:
    for index in range(count):
        yield field(f"f{index}", b"x")
    yield form(file_part(b"abc"))


async def test_200000_tiny_fields_are_refused_at_the_33rd_part_without_reading_on(store: FileStore) -> None:
    body = Body(tiny_fields(200_000))
    tracemalloc.start()
    try:
        refused = await upload(store, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (refused.status, refused.detail) == (400, f"too many parts: at most {MAX_PARTS} fields and files")
    assert body.pulled <= 8192  # the first chunk holds more than 32 parts: nothing read after it
    # What is held at once: one chunk, its events, at most MAX_PARTS fields of MAX_FIELD_BYTES.
    assert peak < 8192 * 4 + MAX_PARTS * MAX_FIELD_BYTES * 2


async def test_a_long_field_is_refused_by_name_as_soon_as_it_passes_the_cap(store: FileStore) -> None:
    body = Body([field("webhook_url", b"h" * 10_000_000)])
    refused = await upload(store, body)
    assert (refused.status, refused.detail) == (
        400,
        f"field 'webhook_url' is longer than {MAX_FIELD_BYTES} bytes",
    )
    assert body.pulled <= MAX_FIELD_BYTES + 8192


async def test_all_fields_together_are_capped(store: FileStore) -> None:
    parts = [field(f"f{index}", b"v" * MAX_FIELD_BYTES) for index in range(MAX_PARTS - 1)]
    body = Body([*parts, form(file_part(b"abc"))])
    refused = await upload(store, body)
    assert refused.status == 400
    assert refused.detail.startswith("the form's fields, part headers and boundaries take more than")
    assert body.pulled <= MAX_NON_FILE_BYTES + 8192


async def test_leading_junk_counts_against_the_cap(store: FileStore) -> None:
    body = Body([b"\r\n" * 1_000_000])  # the parser skips leading line breaks: we count them
    refused = await upload(store, body)
    assert refused.status == 400 and body.pulled <= MAX_NON_FILE_BYTES + 8192


async def test_a_chunked_file_past_the_limit_is_413_and_leaves_nothing(store: FileStore) -> None:
    limits = FormLimits(max_file_bytes=100_000)
    body = Body([form(file_part(b"\x00" * 10_000_000))])
    refused = await upload(store, body, limits)
    assert (refused.status, refused.detail) == (413, "the file is larger than the limit of 100000 bytes")
    assert body.pulled <= 100_000 + 9 * 8192  # the writer's hand-over queue holds 8 chunks


async def test_the_whole_body_is_capped_before_it_is_parsed(store: FileStore) -> None:
    limits = FormLimits(max_file_bytes=1000, max_non_file_bytes=1000)
    body = Body([form(file_part(b"\x00" * 5000))], chunk=4096)
    refused = await upload(store, body, limits)
    assert (refused.status, refused.detail) == (413, "the file is larger than the limit of 1000 bytes")
    assert body.pulled == 4096  # the first chunk already passed the cap: it was never parsed


async def test_a_file_part_after_the_file_is_refused_and_the_first_deleted(store: FileStore) -> None:
    refused = await upload(store, Body([form(file_part(b"abc"), file_part(b"def"))]))
    assert refused.detail == "send exactly one file per upload (got two)"


@pytest.mark.parametrize(
    ("parts", "detail"),
    [
        ([field("a", b"1"), field("a", b"2")], "field 'a' is given twice"),
        ([field("n" * 1000, b"1"), field("n" * 1000, b"2")], f"field '{'n' * 64}' is given twice"),
        ([field("a", b"1", b"X-Pad: " + b"p" * MAX_PART_HEADER_BYTES)], "Maximum header size exceeded"),
        ([field("a", b"1", *[b"X-Pad: p"] * 8)], "malformed multipart body"),
    ],
)
async def test_malformed_fields_are_400s(store: FileStore, parts: list[bytes], detail: str) -> None:
    refused = await upload(store, Body([form(*parts, file_part(b"abc"))]))
    assert refused.status == 400 and detail in refused.detail, refused.detail


async def test_an_over_long_boundary_is_400(store: FileStore) -> None:
    with pytest.raises(UploadError) as refused:
        await store_upload(aiter(Body([b""])), "multipart/form-data; boundary=" + "b" * 300, store, LIMITS)
    assert refused.value.status == 400
