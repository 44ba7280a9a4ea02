"""The conversion engine on media generated with PyAV, outputs checked by decoding them."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from alchemist.converter.engine import ConversionEngine
from alchemist.converter.errors import (
    ConversionError,
    ConversionFailedError,
    NoAudioTrackError,
    NotMediaError,
    ResourceLimitError,
    TooLongError,
)
from alchemist.converter.options import ConversionLimits, ConversionOptions
from tests.media import Audio, decode, write_media

CASES = {
    "mp4 h264+aac": dict(suffix=".mp4", video="libx264", audio=(Audio("aac"),)),
    "mkv opus": dict(suffix=".mkv", video="libx264", audio=(Audio("libopus", 48_000),)),
    "mkv vorbis": dict(suffix=".mkv", video="libx264", audio=(Audio("vorbis", 44_100),)),
    "webm vp8+opus": dict(suffix=".webm", video="libvpx", audio=(Audio("libopus", 48_000),)),
    "mov h264+aac": dict(suffix=".mov", video="libx264", audio=(Audio("aac"),)),
    "avi mpeg4+mp3": dict(suffix=".avi", video="mpeg4", audio=(Audio("libmp3lame"),)),
    "m4a audio only": dict(suffix=".m4a", video=None, audio=(Audio("aac"),)),
    "48 kHz": dict(suffix=".mp4", video="libx264", audio=(Audio("aac", 48_000),)),
    "8 kHz mono": dict(suffix=".mp4", video="libx264", audio=(Audio("aac", 8_000, "mono"),)),
    "5.1": dict(suffix=".mkv", video="libx264", audio=(Audio("libopus", 48_000, "5.1"),)),
}
EXPECTED_CHANNELS = {"8 kHz mono": 1}


@pytest.mark.parametrize("case", CASES)
def test_every_container_converts_to_an_mp3_of_the_same_length(
    engine: ConversionEngine, tmp_path: Path, case: str
) -> None:
    spec = dict(CASES[case])
    source = write_media(tmp_path / f"My Clip{spec.pop('suffix')}", seconds=3, **spec)  # type: ignore[arg-type]
    out = tmp_path / "out.mp3"
    result = engine.convert(source, out)
    decoded = decode(out)
    assert decoded.codec.startswith("mp3")
    assert abs(decoded.duration - decode(source).duration) < 0.1
    assert decoded.channels == EXPECTED_CHANNELS.get(case, 2)
    assert decoded.tags["title"] == "My Clip"
    assert result.copied == (case == "avi mpeg4+mp3")
    assert result.warning is None
    assert result.output_bytes == out.stat().st_size


def test_mono_sample_rate_and_vbr_are_applied(engine: ConversionEngine, tmp_path: Path) -> None:
    source = write_media(tmp_path / "in.mp4", audio=(Audio("aac", 48_000),))
    out = tmp_path / "out.mp3"
    options = ConversionOptions(mono=True, sample_rate=22_050, vbr_quality=4)
    engine.convert(source, out, options)
    decoded = decode(out)
    assert (decoded.channels, decoded.rate) == (1, 22_050)


def test_trim_keeps_only_the_asked_span(engine: ConversionEngine, tmp_path: Path) -> None:
    source = write_media(tmp_path / "in.mp4", seconds=4)
    out = tmp_path / "out.mp3"
    engine.convert(source, out, ConversionOptions(start=1.0, end=2.5))
    assert abs(decode(out).duration - 1.5) < 0.1


def test_the_default_track_is_chosen_over_the_first(engine: ConversionEngine, tmp_path: Path) -> None:
    tracks = (Audio("aac", 22_050, "mono", default=False), Audio("aac", 48_000, default=True))
    source = write_media(tmp_path / "two.mkv", audio=tracks)
    out = tmp_path / "out.mp3"
    engine.convert(source, out)
    assert (decode(out).rate, decode(out).channels) == (48_000, 2)


def test_without_a_default_track_the_first_is_chosen(engine: ConversionEngine, tmp_path: Path) -> None:
    tracks = (Audio("aac", 22_050, "mono", default=False), Audio("aac", 48_000, default=False))
    source = write_media(tmp_path / "two.mkv", audio=tracks)
    out = tmp_path / "out.mp3"
    engine.convert(source, out)
    assert (decode(out).rate, decode(out).channels) == (22_050, 1)


def test_source_tags_are_carried_over(engine: ConversionEngine, tmp_path: Path) -> None:
    tags = {"title": "Song", "artist": "Ann", "album": "Demos", "date": "2024"}
    source = write_media(tmp_path / "file name.mp4", tags=tags)
    out = tmp_path / "out.mp3"
    result = engine.convert(source, out)
    decoded = decode(out)
    assert {k: decoded.tags[k] for k in tags} == tags
    assert result.tags == tags


def test_streams_in_and_out_are_spooled_not_held_in_memory(engine: ConversionEngine, tmp_path: Path) -> None:
    source = write_media(tmp_path / "in.mp4")

    class Unseekable(io.RawIOBase):
        def __init__(self, path: Path) -> None:
            self._file = path.open("rb")

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            return self._file.readinto(buffer)

    output = io.BytesIO()
    spool = tmp_path / "spool"
    streaming = ConversionEngine(spool_dir=spool)
    try:
        result = streaming.convert(Unseekable(source), output, filename="Upload.mp4")
    finally:
        streaming.close()
    (tmp_path / "out.mp3").write_bytes(output.getvalue())
    assert decode(tmp_path / "out.mp3").tags["title"] == "Upload"
    assert result.output_bytes == len(output.getvalue())
    assert list(spool.iterdir()) == []


def test_an_open_file_is_read_in_place(engine: ConversionEngine, tmp_path: Path) -> None:
    source = write_media(tmp_path / "in.mp4")
    with source.open("rb") as handle:
        engine.convert(handle, tmp_path / "out.mp3", filename="in.mp4")
    assert decode(tmp_path / "out.mp3").codec.startswith("mp3")


def test_progress_is_reported_up_to_the_total(engine: ConversionEngine, tmp_path: Path) -> None:
    source = write_media(tmp_path / "in.mp4", seconds=5, video=None)
    seen: list[tuple[float, float | None]] = []
    engine.convert(source, tmp_path / "out.mp3", progress=lambda d, t: seen.append((d, t)))
    assert seen
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert abs(seen[-1][0] - seen[-1][1]) < 0.1  # type: ignore[operator]


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b"", NotMediaError, "not a media file"),
        (os.urandom(200_000), NotMediaError, "not a media file"),
        (b"hello, I am a text file\n" * 100, NotMediaError, "not a media file"),
    ],
)
def test_non_media_fails_with_a_clear_error_and_leaves_nothing(
    engine: ConversionEngine, tmp_path: Path, content: bytes, error: type, message: str
) -> None:
    source = tmp_path / "upload.mp4"
    source.write_bytes(content)
    with pytest.raises(error, match=message) as caught:
        engine.convert(source, tmp_path / "out.mp3")
    assert caught.value.permanent
    assert list(tmp_path.iterdir()) == [source]


def test_video_without_audio_says_so(engine: ConversionEngine, tmp_path: Path) -> None:
    source = write_media(tmp_path / "silent.mp4", audio=())
    with pytest.raises(NoAudioTrackError, match="no audio track"):
        engine.convert(source, tmp_path / "out.mp3")


def test_too_long_media_is_refused_before_converting(tmp_path: Path) -> None:
    source = write_media(tmp_path / "long.mp4", seconds=3)
    short = ConversionEngine(ConversionLimits(max_duration=2))
    try:
        with pytest.raises(TooLongError, match="lasts 3 s; the maximum is 2 s"):
            short.convert(source, tmp_path / "out.mp3")
    finally:
        short.close()
    assert not (tmp_path / "out.mp3").exists()


def cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    target = path.with_name("cut-" + path.name)
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_truncated_mp4_converts_what_is_decodable_and_says_so(
    engine: ConversionEngine, tmp_path: Path
) -> None:
    whole = write_media(tmp_path / "whole.mp4", seconds=6, video=None, faststart=True)
    out = tmp_path / "out.mp3"
    result = engine.convert(cut(whole, 0.6), out)
    assert result.truncated
    assert "damaged or truncated: converted" in str(result.warning)
    assert 1 < decode(out).duration < 6 - 0.5
    assert result.source_duration == pytest.approx(6, abs=0.1)


def test_truncated_mp4_without_its_index_fails_cleanly(engine: ConversionEngine, tmp_path: Path) -> None:
    whole = write_media(tmp_path / "whole.mp4", seconds=6, video=None)  # index at the end
    out = tmp_path / "out.mp3"
    with pytest.raises(NotMediaError, match="moov atom not found"):
        engine.convert(cut(whole, 0.6), out)
    assert not out.exists()


def test_output_size_limit_fails_the_conversion_and_leaves_no_file(tmp_path: Path) -> None:
    source = write_media(tmp_path / "in.mp4", seconds=4, video=None)
    tiny = ConversionEngine(ConversionLimits(max_output_bytes=10_000))
    try:
        with pytest.raises(ResourceLimitError, match="larger than 10000 bytes"):
            tiny.convert(source, tmp_path / "out.mp3")
    finally:
        tiny.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_wall_clock_limit_kills_the_child(tmp_path: Path) -> None:
    source = write_media(tmp_path / "in.mp4", seconds=20, video=None)
    hasty = ConversionEngine(ConversionLimits(wall_seconds_base=0.05, wall_seconds_per_media_second=0))
    try:
        with pytest.raises(ResourceLimitError, match="took longer than"):
            hasty.convert(source, tmp_path / "out.mp3")
    finally:
        hasty.close()


def test_memory_limit_fails_the_conversion_not_the_engine(tmp_path: Path) -> None:
    source = write_media(tmp_path / "in.mp4", video=None)
    starved = ConversionEngine(ConversionLimits(memory_bytes=8 << 20, probe_timeout=5))
    try:
        with pytest.raises(ConversionError):
            starved.convert(source, tmp_path / "out.mp3")
    finally:
        starved.close()


def test_a_hanging_reader_fails_that_file_and_the_next_file_converts(tmp_path: Path) -> None:
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)  # opening it for reading blocks forever: a hang inside the reader
    good = write_media(tmp_path / "good.mp4")
    patient = ConversionEngine(ConversionLimits(probe_timeout=1))
    try:
        with pytest.raises(ConversionFailedError, match="crashed or hung"):
            patient.convert(fifo, tmp_path / "never.mp3")
        patient.convert(good, tmp_path / "good.mp3")
    finally:
        patient.close()
    assert decode(tmp_path / "good.mp3").codec.startswith("mp3")


def hls_playlist_pointing_at(target: Path, disguise: Path) -> Path:
    disguise.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:10.0,\nfile:{target}\n#EXT-X-ENDLIST\n"
    )
    return disguise


class OpenWatch:
    """A FIFO that records whether anybody ever opened it for reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        with open(self.path, "wb"):  # returns only once a reader has opened the FIFO
            self.opened.set()

    def release(self) -> None:
        if not self.opened.is_set():
            with open(self.path, "rb"):
                pass
        self._thread.join(5)


def test_a_disguised_hls_playlist_is_refused_and_its_target_never_read(
    engine: ConversionEngine, tmp_path: Path
) -> None:
    watch = OpenWatch(tmp_path / "secret.ts")
    playlist = hls_playlist_pointing_at(watch.path, tmp_path / "holiday.mp4")
    try:
        with pytest.raises(NotMediaError, match="not a media file"):
            engine.convert(playlist, tmp_path / "out.mp3")
        assert not watch.opened.wait(1.0)
    finally:
        watch.release()


def test_the_hls_check_can_fail_plain_ffmpeg_does_follow_the_playlist(tmp_path: Path) -> None:
    import subprocess

    from alchemist.converter.ffmpeg import ffmpeg_executable

    watch = OpenWatch(tmp_path / "secret.ts")
    playlist = hls_playlist_pointing_at(watch.path, tmp_path / "holiday.m3u8")
    follower = subprocess.Popen(
        [ffmpeg_executable(), "-nostdin", "-loglevel", "quiet", "-i", str(playlist),
         "-f", "null", "-"],
    )  # fmt: skip
    try:
        assert watch.opened.wait(20), "ffmpeg without the allowlist never opened the target"
    finally:
        watch.release()
        follower.kill()
        follower.wait()
