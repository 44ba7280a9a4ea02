"""One contract, every BlobStore adapter."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from alchemist.storage.base import (
    BlobNotFoundError,
    BlobTooLargeError,
    UploadAbortedError,
    exists,
    iter_range,
    put_async,
)

from .conftest import StoreUnderTest

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


def pieces(data: bytes, size: int = 65_536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def async_pieces(data: bytes) -> AsyncIterator[bytes]:
    for piece in pieces(data):
        yield piece


def test_put_then_stat_and_read_back(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    info = store.put(pieces(PAYLOAD), filename="clip.mp4", content_type="video/mp4")
    assert isinstance(info.id, str)
    stat = store.stat(info.id)
    assert (stat.size, stat.filename, stat.content_type) == (len(PAYLOAD), "clip.mp4", "video/mp4")
    assert before <= stat.created <= datetime.now(timezone.utc) + timedelta(seconds=1)
    with store.open(info.id) as reader:
        assert reader.read() == PAYLOAD
    assert exists(store, info.id)


def test_put_from_a_file_object(store_under_test: StoreUnderTest) -> None:
    info = store_under_test.store.put(io.BytesIO(PAYLOAD), filename="a.mp3", content_type="audio/mpeg")
    assert store_under_test.store.stat(info.id).size == len(PAYLOAD)


async def test_put_from_an_async_stream(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    info = await put_async(store, async_pieces(PAYLOAD), filename="x", content_type="video/mp4")
    with store.open(info.id) as reader:
        assert reader.read() == PAYLOAD


def test_reader_is_seekable_and_ranges_are_inclusive(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    info = store.put(pieces(PAYLOAD), filename="x", content_type="video/mp4")
    with store.open(info.id) as reader:
        reader.seek(1_000_000)
        assert reader.read(10) == PAYLOAD[1_000_000:1_000_010]
        reader.seek(0)
        assert reader.read(3) == PAYLOAD[:3]
    span = b"".join(iter_range(store, info.id, 2_000_000, 3_500_000))
    assert span == PAYLOAD[2_000_000:3_500_001]
    tail = b"".join(iter_range(store, info.id, len(PAYLOAD) - 5, len(PAYLOAD) + 100))
    assert tail == PAYLOAD[-5:]


def test_size_limit_is_exact_and_leaves_nothing(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    exact = store.put(pieces(PAYLOAD), filename="x", content_type="v", max_bytes=len(PAYLOAD))
    held = store_under_test.stored_objects()
    with pytest.raises(BlobTooLargeError, match=f"larger than the limit of {len(PAYLOAD) - 1}"):
        store.put(pieces(PAYLOAD), filename="x", content_type="v", max_bytes=len(PAYLOAD) - 1)
    assert store_under_test.stored_objects() == held
    assert store.stat(exact.id).size == len(PAYLOAD)


async def test_async_size_limit_leaves_nothing(store_under_test: StoreUnderTest) -> None:
    held = store_under_test.stored_objects()
    with pytest.raises(BlobTooLargeError):
        await put_async(
            store_under_test.store, async_pieces(PAYLOAD), filename="x", content_type="v",
            max_bytes=100_000,
        )  # fmt: skip
    assert store_under_test.stored_objects() == held


async def test_a_stream_that_breaks_midway_leaves_nothing(store_under_test: StoreUnderTest) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield PAYLOAD[:500_000]
        yield PAYLOAD[500_000:900_000]
        raise ConnectionResetError("client went away")

    held = store_under_test.stored_objects()
    with pytest.raises(ConnectionResetError):
        await put_async(store_under_test.store, broken(), filename="x", content_type="v")
    assert store_under_test.stored_objects() == held

    def broken_sync() -> Iterator[bytes]:
        yield PAYLOAD[:500_000]
        raise UploadAbortedError("gone")

    with pytest.raises(UploadAbortedError):
        store_under_test.store.put(broken_sync(), filename="x", content_type="v")
    assert store_under_test.stored_objects() == held


def test_delete_removes_everything(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    held = store_under_test.stored_objects()
    info = store.put(pieces(PAYLOAD), filename="x", content_type="v")
    assert store.delete(info.id) is True
    assert store.delete(info.id) is False
    assert not exists(store, info.id)
    with pytest.raises(BlobNotFoundError):
        store.open(info.id)
    assert store_under_test.stored_objects() == held


@pytest.mark.parametrize(
    "blob_id",
    ["", "nope", "../../etc/passwd", "0" * 24, "f" * 32, "F" * 32, "/" + "a" * 31, "a" * 31 + "\n"],
)
def test_unknown_or_malformed_ids_are_simply_not_found(
    store_under_test: StoreUnderTest, blob_id: str
) -> None:
    store = store_under_test.store
    with pytest.raises(BlobNotFoundError):
        store.stat(blob_id)
    with pytest.raises(BlobNotFoundError):
        store.open(blob_id)
    assert store.delete(blob_id) is False


def test_empty_blob_round_trips(store_under_test: StoreUnderTest) -> None:
    info = store_under_test.store.put(iter(()), filename="empty", content_type="v")
    assert store_under_test.store.stat(info.id).size == 0
    with store_under_test.store.open(info.id) as reader:
        assert reader.read() == b""


def test_ping(store_under_test: StoreUnderTest) -> None:
    store_under_test.store.ping()


def test_a_blob_can_be_named_before_it_is_written(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    chosen = store.new_id()
    assert not exists(store, chosen)
    info = store.put(pieces(PAYLOAD), filename="x.mp3", content_type="audio/mpeg", blob_id=chosen)
    assert info.id == chosen
    assert store.stat(chosen).size == len(PAYLOAD)
    with pytest.raises(BlobNotFoundError):
        store.put(pieces(b"x"), filename="x", content_type="v", blob_id="../escape")


def test_list_shows_every_complete_blob_and_nothing_else(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    assert list(store.list()) == []
    first = store.put(pieces(b"a" * 10), filename="a.mp4", content_type="video/mp4")
    second = store.put(pieces(b"b" * 20), filename="b.mp3", content_type="audio/mpeg")
    with pytest.raises(BlobTooLargeError):
        store.put(pieces(PAYLOAD), filename="big.mp4", content_type="video/mp4", max_bytes=1000)
    listed = {blob.id: blob for blob in store.list()}
    assert set(listed) == {first.id, second.id}
    assert (listed[first.id].size, listed[second.id].filename) == (10, "b.mp3")
    store.delete(first.id)
    assert [blob.id for blob in store.list()] == [second.id]


def test_purge_partial_spares_complete_blobs_and_new_writes(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    kept = store.put(pieces(PAYLOAD), filename="kept.mp4", content_type="video/mp4")
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert store.purge_partial(future, dry_run=True) == 0  # nothing half-written exists
    assert store.purge_partial(future) == 0
    assert exists(store, kept.id) and store.stat(kept.id).size == len(PAYLOAD)
