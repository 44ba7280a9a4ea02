"""MAX_MEDIA_SECONDS holds for what is read, not for what a header claims, on every path.

The files lie with real headers written by PyAV: an MP3 whose Xing/Info frame counts 2 s
followed by 10 s more of frames (a concatenation FFmpeg does not detect), and a Matroska file
whose Segment Duration says 2 s. Each lasts 12 s; the limit is 5 s.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from alchemist.converter.engine import ConversionEngine
from alchemist.converter.errors import TooLongError
from alchemist.converter.options import ConversionLimits, ConversionOptions
from alchemist.converter.reader_child import mp3_frames_seconds
from tests.media import Audio, decode, write_lying_matroska, write_lying_mp3, write_media

LIMIT = 5.0
TOO_LONG = f"the media lasts longer than the maximum of {LIMIT:.0f} s"


@pytest.fixture(scope="module")
def engine() -> Iterator[ConversionEngine]:
    """An engine whose media may last 5 s."""
    engine = ConversionEngine(ConversionLimits(max_duration=LIMIT))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def lying_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_lying_mp3(tmp_path_factory.mktemp("media") / "liar.mp3", claimed=2, actual=12)
    with av.open(str(path)) as container:  # what the reader trusts: the header's word
        assert container.duration / 1_000_000 == pytest.approx(2, abs=0.05)
    assert decode(path).duration == pytest.approx(12, abs=0.1)  # what it really holds
    return path


@pytest.mark.parametrize(
    ("options", "path"),
    [
        (None, "remux"),  # MP3 in, nothing to change: the reader child copies the frames
        (ConversionOptions(mono=True), "ffmpeg re-encode"),
        (ConversionOptions(start=1.0), "ffmpeg copy"),
        (ConversionOptions(start=0.5, end=30.0, bitrate="128k"), "ffmpeg copy"),
    ],
)
def test_an_mp3_that_lies_about_its_length_is_too_long_on_every_path(
    engine: ConversionEngine, lying_mp3: Path, tmp_path: Path, options: ConversionOptions | None, path: str
) -> None:
    out = tmp_path / "out.mp3"
    with pytest.raises(TooLongError, match=TOO_LONG):
        engine.convert(lying_mp3, out, options)
    assert list(tmp_path.iterdir()) == []  # no MP3, not even a partial one


def test_a_lying_mp3_into_a_stream_writes_nothing(engine: ConversionEngine, lying_mp3: Path) -> None:
    sink = io.BytesIO()
    with pytest.raises(TooLongError, match=TOO_LONG):
        engine.convert(io.BytesIO(lying_mp3.read_bytes()), sink)
    assert sink.getvalue() == b""


def test_a_matroska_file_that_lies_about_its_length_is_too_long(
    engine: ConversionEngine, tmp_path: Path
) -> None:
    source = write_lying_matroska(tmp_path / "liar.mkv", claimed=2, actual=12)
    assert engine.probe(source).duration == pytest.approx(2, abs=0.05)
    with pytest.raises(TooLongError, match=TOO_LONG):
        engine.convert(source, tmp_path / "out.mp3")
    assert not (tmp_path / "out.mp3").exists()


def test_reading_only_up_to_an_end_inside_the_limit_is_allowed(
    engine: ConversionEngine, lying_mp3: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp3"
    result = engine.convert(lying_mp3, out, ConversionOptions(end=4.0))
    assert decode(out).duration == pytest.approx(4, abs=0.1) and result.duration < LIMIT


@pytest.mark.parametrize(
    ("seconds", "audio", "copied"), [(4.5, Audio("libmp3lame"), True), (4.5, Audio("aac"), False)]
)
def test_honest_files_within_the_limit_convert_whole(
    engine: ConversionEngine, tmp_path: Path, seconds: float, audio: Audio, copied: bool
) -> None:
    source = write_media(
        tmp_path / "in.mka", seconds=seconds, video=None, audio=(audio,), container="matroska"
    )
    out = tmp_path / "out.mp3"
    result = engine.convert(source, out)
    assert result.copied is copied and result.warning is None
    assert decode(out).duration == pytest.approx(seconds, abs=0.1)


def test_a_lying_mp3_within_a_larger_limit_converts_whole(lying_mp3: Path, tmp_path: Path) -> None:
    engine = ConversionEngine(ConversionLimits(max_duration=15))
    try:
        result = engine.convert(lying_mp3, tmp_path / "out.mp3")
    finally:
        engine.close()
    assert result.duration == pytest.approx(12, abs=0.1)
    assert decode(tmp_path / "out.mp3").duration == pytest.approx(12, abs=0.1)


def test_a_start_past_the_limit_is_too_long(
    engine: ConversionEngine, lying_mp3: Path, tmp_path: Path
) -> None:
    with pytest.raises(TooLongError, match="past the maximum duration"):
        engine.convert(lying_mp3, tmp_path / "out.mp3", ConversionOptions(start=LIMIT))


def test_mp3_frames_are_counted_from_their_own_headers(lying_mp3: Path) -> None:
    data = lying_mp3.read_bytes()
    with av.open(str(lying_mp3)) as container:
        stream = container.streams.audio[0]
        packets = [bytes(packet) for packet in container.demux(stream) if packet.dts is not None]
    counted = sum(mp3_frames_seconds(memoryview(packet)) for packet in packets)
    assert counted == pytest.approx(12, abs=0.1)
    # Two frames in one packet count twice; half a frame, or anything else, counts nothing.
    assert mp3_frames_seconds(memoryview(packets[1] + packets[2])) == pytest.approx(2 * 1152 / 44_100)
    assert mp3_frames_seconds(memoryview(packets[1][: len(packets[1]) // 2])) == 0
    assert mp3_frames_seconds(memoryview(b"\xff\xfb\x00\x00" + b"\x00" * 1000)) == 0  # free format
    assert mp3_frames_seconds(memoryview(data[:3])) == 0
