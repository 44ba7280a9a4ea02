"""Every BlobStore adapter, each with a way to count what it holds (to prove nothing leaks)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alchemist.storage.base import BlobStore
from alchemist.storage.files import FileStore


@dataclass
class StoreUnderTest:
    store: BlobStore
    stored_objects: Callable[[], int]


def _file_store(tmp_path: Path) -> Iterator[StoreUnderTest]:
    root = tmp_path / "blobs"
    store = FileStore(root)

    def count() -> int:  # every file anywhere under the root, temp files included
        return sum(len(files) for _, _, files in os.walk(root))

    yield StoreUnderTest(store, count)


def _gridfs_store(database: object) -> StoreUnderTest:
    from alchemist.storage.gridfs import GridFSStore

    store = GridFSStore(database)

    def count() -> int:
        files = database["fs.files"].count_documents({})  # type: ignore[index]
        chunks = database["fs.chunks"].count_documents({})  # type: ignore[index]
        return int(files + chunks)

    return StoreUnderTest(store, count)


def _mongomock_store() -> Iterator[StoreUnderTest]:
    import mongomock
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    yield _gridfs_store(mongomock.MongoClient()["videos"])


def _real_mongodb_store() -> Iterator[StoreUnderTest]:
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        pytest.skip("MONGODB_URI is not set: GridFS runs against mongomock only")
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(uri)
    name = f"alchemist_test_{secrets.token_hex(4)}"
    try:
        yield _gridfs_store(client[name])
    finally:
        client.drop_database(name)
        client.close()


@pytest.fixture(params=["file", "gridfs-mongomock", "gridfs-mongodb"])
def store_under_test(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    """Each adapter in turn; the real MongoDB one only when MONGODB_URI is set."""
    makers = {
        "file": lambda: _file_store(tmp_path),
        "gridfs-mongomock": _mongomock_store,
        "gridfs-mongodb": _real_mongodb_store,
    }
    yield from makers[request.param]()
