"""`alchemist storage check [--fix]` on the embedded default: orphans and partial writes."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from alchemist import jobs
from alchemist.config import Settings
from alchemist.db.engine import transaction
from alchemist.storage.files import FileStore
from alchemist.wiring import build_database
from tests.e2e.conftest import alchemist


def test_orphans_and_partial_writes_are_reported_then_fixed(embedded_env: dict[str, str]) -> None:
    data = Path(embedded_env["ALCHEMIST_DATA_DIR"])
    settings = Settings(ALCHEMIST_DATA_DIR=data)
    engine, sessions = build_database(settings)
    videos, outputs = FileStore(data / "videos"), FileStore(data / "mp3s")
    kept = videos.put(io.BytesIO(b"v" * 10), filename="kept.mp4", content_type="video/mp4")
    output = outputs.put(io.BytesIO(b"m" * 7), filename="kept.mp3", content_type="audio/mpeg")
    lost_video = videos.put(io.BytesIO(b"x" * 100), filename="lost.mp4", content_type="video/mp4")
    lost_output = outputs.put(io.BytesIO(b"y" * 50), filename="lost.mp3", content_type="audio/mpeg")
    with transaction(sessions) as session:
        job = jobs.create_job(session, owner="a@b.co", filename="kept.mp4", video_fid=kept.id, video_bytes=10)
        jobs.set_pending_mp3(session, job.id, output.id)
    engine.dispose()
    partial = data / "videos" / ".incoming" / "deadbeef-partial"
    partial.write_bytes(b"half an upload")
    old = time.time() - 7200
    os.utime(partial, (old, old))

    checked = alchemist("storage", "check", "--min-age", "0", env=embedded_env)
    assert checked.returncode == 1, checked.stderr
    assert f"orphan\tvideos\t{lost_video.id}\t100\tlost.mp4" in checked.stdout
    assert f"orphan\toutputs\t{lost_output.id}\t50\tlost.mp3" in checked.stdout
    assert "2 orphan blobs (150 bytes), 1 partial writes" in checked.stdout
    assert kept.id not in checked.stdout and output.id not in checked.stdout

    young = alchemist("storage", "check", env=embedded_env)  # default: only blobs older than an hour
    assert young.returncode == 1 and "0 orphan blobs" in young.stdout  # the hour-old partial still counts

    fixed = alchemist("storage", "check", "--fix", "--min-age", "0", env=embedded_env)
    assert fixed.returncode == 0, fixed.stderr
    assert {blob.id for blob in videos.list()} == {kept.id}
    assert {blob.id for blob in outputs.list()} == {output.id}
    assert not partial.exists()
    again = alchemist("storage", "check", "--min-age", "0", env=embedded_env)
    assert again.returncode == 0 and "0 orphan blobs (0 bytes), 0 partial writes" in again.stdout
