"""1 GiB through each BlobStore: stored from a stream and read back, with peak RSS.

Run: .venv/bin/python bench/storage.py [--gib 1]
Each store runs in a fresh interpreter so its peak RSS is its own. GridFS runs against
MONGODB_URI when set; otherwise against mongomock, which keeps the data in this very
process, so its RSS measures the fake database, not the adapter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


def generated(total: int) -> Iterator[bytes]:
    block = os.urandom(CHUNK)
    for _ in range(total // CHUNK):
        yield block


def run_one(kind: str, total: int) -> dict[str, float]:
    from alchemist.storage.base import BlobStore

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as scratch:
        store: BlobStore
        if kind == "file":
            from alchemist.storage.files import FileStore

            store = FileStore(Path(scratch))
        else:
            from alchemist.storage.gridfs import GridFSStore

            uri = os.environ.get("MONGODB_URI")
            if uri:
                import pymongo

                store = GridFSStore(pymongo.MongoClient(uri)["alchemist_bench"])
            else:
                import mongomock
                import mongomock.gridfs

                mongomock.gridfs.enable_gridfs_integration()
                store = GridFSStore(mongomock.MongoClient()["alchemist_bench"])
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        info = store.put(generated(total), filename="big.bin", content_type="application/octet-stream")
        written = time.perf_counter() - start
        start = time.perf_counter()
        read = 0
        with store.open(info.id) as reader:
            while chunk := reader.read(CHUNK):
                read += len(chunk)
        elapsed = time.perf_counter() - start
        assert read == total, (read, total)
        store.delete(info.id)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "baseline_mb": baseline / 1024, "peak_mb": peak / 1024,
        "write_mb_s": total / written / 1e6, "read_mb_s": total / elapsed / 1e6,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    total = int(args.gib * (1 << 30)) // CHUNK * CHUNK
    if args.one:
        print(json.dumps(run_one(args.one, total)))
        return
    gridfs_label = "gridfs (MONGODB_URI)" if os.environ.get("MONGODB_URI") else "gridfs (mongomock)"
    print(f"{total / (1 << 30):.2f} GiB stored and read back")
    print(f"{'store':22} {'before MB':>10} {'peak MB':>9} {'write MB/s':>11} {'read MB/s':>10}")
    for kind, label in (("file", "file"), ("gridfs", gridfs_label)):
        done = subprocess.run(
            [sys.executable, __file__, "--gib", str(args.gib), "--one", kind],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(done.stdout)
        print(f"{label:22} {r['baseline_mb']:10.1f} {r['peak_mb']:9.1f} "
              f"{r['write_mb_s']:11.0f} {r['read_mb_s']:10.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
