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


def remux(path: str, index: int, destination: str, tags: dict[str, str]) -> dict[str, Any]:
    """Copy one MP3 track into an MP3 file without decoding it (other streams never read)."""
    first, last = None, 0
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
            for packet in source.demux(audio):
                if packet.dts is None:
                    continue
                # Integer ticks here: Fraction maths per packet is slow.
                if packet.pts is not None:
                    first = packet.pts if first is None else min(first, packet.pts)
                    last = max(last, packet.pts + (packet.duration or 0))
                packet.stream = stream
                output.mux(packet)
            ticks = last - (first or 0)
            seconds = float(ticks * audio.time_base) if audio.time_base else 0.0
    except (av.error.FFmpegError, OSError) as exc:
        return {"ok": False, "error": "conversion_failed", "message": str(exc)}
    return {"ok": True, "seconds": seconds}


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request."""
    if request["op"] == "remux":
        return remux(request["path"], request["index"], request["destination"], request["tags"])
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
