"""What only FileStore promises: ids never escape its directory; a crash shows no half file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from alchemist.storage.base import BlobNotFoundError
from alchemist.storage.files import FileStore


@given(st.text(max_size=80))
def test_no_id_reaches_outside_the_root(blob_id: str) -> None:
    store = FileStore(Path("/tmp/alchemist-never-written"))
    try:
        data_path, meta_path = store._paths(blob_id)
    except BlobNotFoundError:
        return
    root = Path("/tmp/alchemist-never-written").resolve()
    assert data_path.resolve().is_relative_to(root)
    assert meta_path.resolve().is_relative_to(root)


WRITER = """
import sys, time
from pathlib import Path
from alchemist.storage.files import FileStore

def slow():
    for _ in range(10_000):
        yield b"x" * 65536
        time.sleep(0.001)
    print("finished", flush=True)

print("writing", flush=True)
FileStore(Path(sys.argv[1])).put(slow(), filename="big.mp4", content_type="video/mp4")
"""


def test_a_writer_killed_midway_leaves_no_visible_blob(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "writing"
    time.sleep(0.5)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    visible = [p for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts]
    leftovers = list((root / ".incoming").iterdir())
    assert visible == []
    assert len(leftovers) == 1  # the partial temp file, never under a blob id
    assert leftovers[0].stat().st_size > 0
