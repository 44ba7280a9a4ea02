"""Test media written with PyAV: containers, codecs, layouts and tags chosen per test."""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

FRAME_SAMPLES = 1024


@dataclass(frozen=True)
class Audio:
    """One audio track to write."""

    codec: str = "aac"
    rate: int = 44_100
    layout: str = "stereo"
    default: bool = True
    frequency: float = 440.0
    tags: dict[str, str] = field(default_factory=dict)


def write_media(
    path: Path,
    *,
    seconds: float = 2.0,
    video: str | None = "libx264",
    audio: tuple[Audio, ...] = (Audio(),),
    tags: dict[str, str] | None = None,
    container: str | None = None,
    faststart: bool = False,
) -> Path:
    """Write a small media file and return its path (MP4 index first with faststart)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        for key, value in (tags or {}).items():
            out.metadata[key] = value
        video_stream = None
        if video:
            video_stream = out.add_stream(video, rate=10)
            video_stream.width, video_stream.height = 64, 48
            video_stream.pix_fmt = "yuv420p"
        audio_streams = []
        for track in audio:
            stream = out.add_stream(track.codec, rate=track.rate, layout=track.layout)
            if track.codec == "vorbis":
                stream.codec_context.options = {"strict": "experimental"}
            for key, value in track.tags.items():
                stream.metadata[key] = value
            stream.disposition = av.stream.Disposition.default if track.default else 0
            audio_streams.append(stream)
        if video_stream is not None:
            for index in range(int(seconds * 10)):
                frame = av.VideoFrame(64, 48, "yuv420p")
                for plane in frame.planes:
                    plane.update(bytes([index * 7 % 256]) * plane.buffer_size)
                frame.pts = index
                frame.time_base = Fraction(1, 10)
                out.mux(video_stream.encode(frame))
            out.mux(video_stream.encode(None))
        for stream, track in zip(audio_streams, audio, strict=True):
            _write_tone(out, stream, track, seconds)
    return path


def _write_tone(
    out: av.container.OutputContainer, stream: av.AudioStream, track: Audio, seconds: float
) -> None:
    channels = av.AudioLayout(track.layout).nb_channels
    total = int(seconds * track.rate)
    for start in range(0, total, FRAME_SAMPLES):
        count = min(FRAME_SAMPLES, total - start)
        samples = array("h")
        for n in range(start, start + count):
            value = int(8000 * math.sin(2 * math.pi * track.frequency * n / track.rate))
            samples.extend([value] * channels)
        frame = av.AudioFrame(format="s16", layout=track.layout, samples=count)
        frame.planes[0].update(samples.tobytes())
        frame.rate = track.rate
        frame.pts = start
        frame.time_base = Fraction(1, track.rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


@dataclass(frozen=True)
class Decoded:
    """What a written MP3 turned out to be, read back with PyAV."""

    codec: str
    duration: float
    channels: int
    rate: int
    tags: dict[str, str]


def decode(path: Path) -> Decoded:
    """Decode every audio frame of a file and report its real duration and format."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return Decoded(
            codec=stream.codec_context.name,
            duration=samples / stream.codec_context.sample_rate,
            channels=stream.codec_context.channels,
            rate=stream.codec_context.sample_rate,
            tags={key.lower(): value for key, value in container.metadata.items()},
        )


def write_lying_mp3(path: Path, *, claimed: float, actual: float) -> Path:
    """An MP3 whose Xing/Info header says it lasts `claimed` s; its frames play for `actual` s.

    A short MP3 with the header, then the frames of another one appended (no header, no tags),
    then the header's byte count set to the whole file so that FFmpeg's "concatenated file"
    check sees nothing wrong: the frame count alone decides the duration it reports.
    """
    head = write_media(path.with_suffix(".head.mp3"), seconds=claimed, video=None,
                       audio=(Audio("libmp3lame"),), container="mp3")  # fmt: skip
    tail = path.with_suffix(".tail.mp3")
    with av.open(str(tail), "w", format="mp3",
                 options={"id3v2_version": "0", "write_xing": "0", "write_id3v1": "0"}) as out:  # fmt: skip
        stream = out.add_stream("libmp3lame", rate=44_100, layout="stereo")
        _write_tone(out, stream, Audio("libmp3lame", frequency=660.0), actual - claimed)
    data = bytearray(head.read_bytes() + tail.read_bytes())
    head.unlink()
    tail.unlink()
    tag = max(data.find(b"Xing"), data.find(b"Info"))
    flags = int.from_bytes(data[tag + 4 : tag + 8], "big")
    assert tag > 0 and flags & 0b11 == 0b11, "the muxer wrote no frame and byte counts"
    data[tag + 12 : tag + 16] = len(data).to_bytes(4, "big")  # frames at +8, bytes at +12
    path.write_bytes(data)
    return path


def write_lying_matroska(path: Path, *, claimed: float, actual: float) -> Path:
    """A Matroska file (AAC audio) whose Segment Duration says `claimed` s; it holds `actual` s."""
    write_media(path, seconds=actual, video=None, audio=(Audio("aac"),), container="matroska")
    data = bytearray(path.read_bytes())
    element = data.find(b"\x44\x89\x88")  # Duration: an 8-byte float, in TimecodeScale units (1 ms)
    assert element > 0, "the muxer wrote no 8-byte Duration"
    data[element + 3 : element + 11] = struct.pack(">d", claimed * 1000)
    path.write_bytes(data)
    return path
