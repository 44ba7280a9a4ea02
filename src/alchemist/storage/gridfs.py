"""GridFSStore: blobs in MongoDB GridFS (as the seeds keep videos and mp3s), ObjectId ids."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, BinaryIO

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import GridFSBucket
from gridfs.errors import NoFile

from alchemist.storage.base import (
    BlobInfo,
    BlobNotFoundError,
    BlobTooLargeError,
    Chunks,
    iter_chunks,
)


class GridFSStore:
    """Blobs in one GridFS bucket of one database (e.g. `videos` and `mp3s`, as in the seeds)."""

    def __init__(self, database: Any, bucket_name: str = "fs") -> None:
        self._database = database
        self._bucket = GridFSBucket(database, bucket_name=bucket_name)
        self._files = database[f"{bucket_name}.files"]
        self._chunks = database[f"{bucket_name}.chunks"]

    def new_id(self) -> str:
        """A new ObjectId, as hex."""
        return str(ObjectId())

    def put(
        self,
        data: Chunks,
        *,
        filename: str,
        content_type: str,
        max_bytes: int | None = None,
        blob_id: str | None = None,
    ) -> BlobInfo:
        """Stream into an upload; past the limit the upload is aborted (its chunks deleted)."""
        upload = self._bucket.open_upload_stream_with_id(
            _object_id(blob_id or self.new_id()), filename, metadata={"content_type": content_type}
        )
        size = 0
        try:
            for chunk in iter_chunks(data):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise BlobTooLargeError(max_bytes)
                upload.write(chunk)
        except BaseException:
            upload.abort()
            raise
        upload.close()
        return self.stat(str(upload._id))

    def open(self, blob_id: str) -> BinaryIO:
        """A GridOut: seekable, read in chunks from the database."""
        try:
            stream: BinaryIO = self._bucket.open_download_stream(_object_id(blob_id))
        except NoFile as exc:
            raise BlobNotFoundError(blob_id) from exc
        return stream

    def stat(self, blob_id: str) -> BlobInfo:
        """Size, type, name and upload date from the files collection."""
        document = self._files.find_one({"_id": _object_id(blob_id)})
        if document is None:
            raise BlobNotFoundError(blob_id)
        created = document["uploadDate"]
        if created.tzinfo is None:  # pymongo returns naive UTC unless tz_aware
            created = created.replace(tzinfo=timezone.utc)
        metadata = document.get("metadata") or {}
        return BlobInfo(
            id=blob_id,
            size=int(document["length"]),
            content_type=metadata.get("content_type", "application/octet-stream"),
            filename=document.get("filename") or "",
            created=created,
        )

    def delete(self, blob_id: str) -> bool:
        """Remove the file document, then its chunks (the order GridFSBucket.delete uses)."""
        try:
            file_id = _object_id(blob_id)
        except BlobNotFoundError:
            return False
        # Done by hand rather than GridFSBucket.delete, which mongomock can't run.
        removed = self._files.delete_one({"_id": file_id}).deleted_count
        self._chunks.delete_many({"files_id": file_id})
        return bool(removed)

    def ping(self) -> None:
        """The server answers."""
        self._database.command("ping")

    def list(self) -> Iterator[BlobInfo]:
        """Every file document of the bucket."""
        for document in self._files.find({}, {"_id": 1}):
            with contextlib.suppress(BlobNotFoundError):
                yield self.stat(str(document["_id"]))

    def purge_partial(self, older_than: datetime, *, dry_run: bool = False) -> int:
        """Chunks whose file document never came (an upload that died) or was deleted."""
        known = {document["_id"] for document in self._files.find({}, {"_id": 1})}
        cutoff = older_than.timestamp()
        stray = [
            files_id
            for files_id in self._chunks.distinct("files_id")
            if files_id not in known and isinstance(files_id, ObjectId)
            and files_id.generation_time.timestamp() < cutoff
        ]  # fmt: skip
        if not dry_run and stray:
            self._chunks.delete_many({"files_id": {"$in": stray}})
        return len(stray)


def _object_id(blob_id: str) -> ObjectId:
    try:
        return ObjectId(blob_id)
    except (InvalidId, TypeError) as exc:
        raise BlobNotFoundError(blob_id) from exc
