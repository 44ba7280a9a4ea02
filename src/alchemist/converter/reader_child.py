"""The media reader's child process: describes files with PyAV, and remuxes MP3 audio.

It runs apart from the worker so that a crash or hang inside libav on a hostile file
costs only this process. Protocol: one JSON request per line on stdin
({"op": "describe", "path": ...} or {"op": "remux", ...}), one JSON answer per line on stdout.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from typing import Any

import av

from alchemist.converter.formats import FORMAT_WHITELIST, PROTOCOL_WHITELIST

TAG_KEYS = ("title", "artist", "album", "date")


def _open_input(path: str) -> Any:
    # Only allowlisted demuxers, only plain files: a playlist can't open anything else.
    options = {"format_whitelist": FORMAT_WHITELIST, "protocol_whitelist": PROTOCOL_WHITELIST}
    return av.open("file:" + path, options=options)


class _KeptOpen:
    """The last described file, kept open when it has MP3 audio: a remux usually follows."""

    path: str | None = None
    container: Any = None

    @classmethod
    def take(cls, path: str) -> Any:
        container, kept = cls.container, cls.path
        cls.path, cls.container = None, None
        if container is not None and kept != path:
            container.close()
            return None
        return container

    @classmethod
    def keep(cls, path: str, container: Any) -> None:
        cls.take("")
        cls.path, cls.container = path, container


def describe(path: str) -> dict[str, Any]:
    """What the converter needs to know about one file, or the reason it can't be read."""
    _KeptOpen.take("")
    try:
        container = _open_input(path)
    except av.error.FFmpegError as exc:
        return {"ok": False, "error": "not_media", "message": str(exc)}
    try:
        audio = [
            {
                "index": stream.index,
                "codec": stream.codec_context.codec.canonical_name,
                "channels": stream.codec_context.channels,
                "sample_rate": stream.codec_context.sample_rate,
                "default": bool(stream.disposition & av.stream.Disposition.default),
                "tags": _tags(stream.metadata),
                "duration": _seconds(stream.duration, stream.time_base),
            }
            for stream in container.streams.audio
        ]
        duration = container.duration / 1_000_000 if container.duration else None
        described = {
            "ok": True,
            "format": container.format.name,
            "duration": duration,
            "tags": _tags(container.metadata),
            "audio": audio,
            "has_video": bool(container.streams.video),
            "stream_count": len(container.streams),
        }
    except BaseException:
        container.close()
        raise
    if any(track["codec"] == "mp3" for track in audio):
        _KeptOpen.keep(path, container)  # saves opening it again for the remux
    else:
        container.close()
    return described


def remux(
    path: str, index: int, destination: str, tags: dict[str, str], max_seconds: float | None = None
) -> dict[str, Any]:
    """Copy one MP3 track into an MP3 file without decoding it (other streams never read).

    What is copied is measured as it goes, whatever the headers claimed: past `max_seconds`
    the copy stops with a "too_long" answer.
    """
    kept = _KeptOpen.take(path)
    try:
        if kept is not None:
            kept.seek(0)
        with (
            kept or _open_input(path) as source,
            av.open(
                "file:" + destination, "w", format="mp3",
                options={"id3v2_version": "3", "write_xing": "1"},
            ) as output,
        ):  # fmt: skip
            audio = source.streams[index]
            stream = output.add_stream_from_template(audio)
            output.metadata.update(tags)
            played = _Played(audio, max_seconds)
            for packet in source.demux(audio):
                if packet.dts is None:
                    continue
                played.add(packet)
                if played.too_long():  # the packet is not written: the output stays within the limit
                    return {"ok": False, "error": "too_long", "seconds": played.seconds()}
                packet.stream = stream
                output.mux(packet)
            seconds = played.seconds()
    except (av.error.FFmpegError, OSError) as exc:
        return {"ok": False, "error": "conversion_failed", "message": str(exc)}
    return {"ok": True, "seconds": seconds}


class _Played:
    """How long the copied audio plays: the largest of three measures, so no header can fake it.

    The span of the packets' timestamps and the sum of their durations (the container's word),
    and the MP3 frames the packets really hold, each counted from its own header (what a player
    will play). Timestamps are summed in integer ticks (Fraction maths per packet is slow).
    """

    def __init__(self, audio: Any, max_seconds: float | None) -> None:
        self.time_base = audio.time_base
        self.first: int | None = None
        self.last = self.summed = 0
        self.frame_seconds = 0.0
        self.max_seconds = max_seconds
        self.max_ticks = None
        if max_seconds is not None and self.time_base:
            self.max_ticks = int(max_seconds / self.time_base)

    def add(self, packet: Any) -> None:
        """Count one packet."""
        stamp = packet.pts if packet.pts is not None else packet.dts
        length = packet.duration or 0
        self.first = stamp if self.first is None else min(self.first, stamp)
        self.last = max(self.last, stamp + length)
        self.summed += length
        self.frame_seconds += mp3_frames_seconds(memoryview(packet))

    def too_long(self) -> bool:
        """True once more than `max_seconds` were counted by any measure."""
        if self.max_seconds is None:
            return False
        ticks = max(self.last - (self.first or 0), self.summed)
        over_ticks = self.max_ticks is not None and ticks > self.max_ticks
        return over_ticks or self.frame_seconds > self.max_seconds

    def seconds(self) -> float:
        """Seconds of audio counted so far."""
        ticks = max(self.last - (self.first or 0), self.summed)
        return max(float(ticks * self.time_base) if self.time_base else 0.0, self.frame_seconds)


# MPEG audio Layer III: kbit/s by bitrate index, for MPEG-1 and for MPEG-2/2.5 (index 0 is free
# format, 15 invalid), and sample rates by index for MPEG-1 (halved for 2, quartered for 2.5).
_BITRATES = {
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0),
}
_RATES = (44_100, 48_000, 32_000, 0)
_RATE_DIVISOR = {3: 1, 2: 2, 0: 4}  # version bits: 3 MPEG-1, 2 MPEG-2, 0 MPEG-2.5 (1 reserved)


def mp3_frames_seconds(data: memoryview) -> float:
    """Seconds of the whole Layer III frames at the start of `data`, walking header to header.

    Stops at anything that is not a frame header (a frame split across packets, padding): it
    never counts more than is there.
    """
    seconds, offset, size = 0.0, 0, len(data)
    while offset + 4 <= size:
        first, second, third = data[offset], data[offset + 1], data[offset + 2]
        version, layer = (second >> 3) & 3, (second >> 1) & 3
        if first != 0xFF or second & 0xE0 != 0xE0 or layer != 1 or version not in _RATE_DIVISOR:
            break
        mpeg1 = version == 3
        bitrate = _BITRATES[mpeg1][third >> 4] * 1000
        rate = _RATES[(third >> 2) & 3] // _RATE_DIVISOR[version]
        if not bitrate or not rate:
            break
        samples = 1152 if mpeg1 else 576
        length = samples // 8 * bitrate // rate + ((third >> 1) & 1)
        if offset + length > size:
            break
        seconds += samples / rate
        offset += length
    return seconds


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request."""
    if request["op"] == "remux":
        return remux(
            request["path"], request["index"], request["destination"], request["tags"],
            request.get("max_seconds"),
        )  # fmt: skip
    return describe(request["path"])


def _tags(metadata: dict[str, str]) -> dict[str, str]:
    lowered = {key.lower(): value for key, value in metadata.items()}
    return {key: lowered[key].strip() for key in TAG_KEYS if lowered.get(key, "").strip()}


def _seconds(value: int | None, time_base: Any) -> float | None:
    return float(value * time_base) if value and time_base else None


def main() -> None:
    """Serve requests until stdin closes; argv: address-space limit, file-size limit (bytes)."""
    memory, file_size = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Past the size limit a write fails with EFBIG instead of killing us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    av.logging.set_level(av.logging.PANIC)
    for line in sys.stdin:
        request = json.loads(line)
        # A hang inside libav can't be interrupted from Python: the default SIGALRM ends us.
        signal.alarm(int(request.get("timeout", 20)))
        result = answer(request)
        signal.alarm(0)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
