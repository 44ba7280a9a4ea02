"""`alchemist convert` as a user runs it: several files, a summary, clear failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.media import Audio, decode, write_media

from .conftest import alchemist


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ALCHEMIST_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}


def test_converts_several_files_and_summarises(tmp_path: Path, env: dict[str, str]) -> None:
    first = write_media(tmp_path / "first.mp4", seconds=2)
    second = write_media(tmp_path / "second.mkv", seconds=3, audio=(Audio("libopus", 48_000),))
    out = tmp_path / "out"
    done = alchemist("convert", str(first), str(second), "-o", str(out), "--jobs", "2", env=env)
    assert done.returncode == 0, done.stderr
    assert abs(decode(out / "first.mp3").duration - 2) < 0.1
    assert abs(decode(out / "second.mp3").duration - 3) < 0.1
    assert "first.mp4" in done.stdout and "second.mkv" in done.stdout
    assert "3.0 s" in done.stdout


def test_failures_exit_non_zero_with_one_line_each(tmp_path: Path, env: dict[str, str]) -> None:
    good = write_media(tmp_path / "good.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    silent = write_media(tmp_path / "silent.mp4", audio=())
    done = alchemist("convert", str(good), str(text), str(silent), "--bitrate", "128k", env=env)
    assert done.returncode == 1
    failures = [line for line in done.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failures) == 2
    assert failures[0].startswith(f"failed: {text}: not a media file")
    assert failures[1] == f"failed: {silent}: the file has no audio track to convert"
    assert (tmp_path / "good.mp3").exists()
    assert not (tmp_path / "notes.mp3").exists()


def test_never_overwrites_without_force(tmp_path: Path, env: dict[str, str]) -> None:
    video = write_media(tmp_path / "clip.mp4")
    existing = tmp_path / "clip.mp3"
    existing.write_bytes(b"keep me")
    refused = alchemist("convert", str(video), env=env)
    assert refused.returncode == 1
    assert "exists (use --force to overwrite)" in refused.stderr
    assert existing.read_bytes() == b"keep me"
    forced = alchemist("convert", str(video), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert decode(existing).codec.startswith("mp3")


def test_bad_options_are_refused_up_front(tmp_path: Path, env: dict[str, str]) -> None:
    video = write_media(tmp_path / "clip.mp4")
    done = alchemist("convert", str(video), "--bitrate", "191k", env=env)
    assert done.returncode == 2
    assert "bitrate '191k' is not an MP3 bitrate" in done.stderr
    assert not (tmp_path / "clip.mp3").exists()
