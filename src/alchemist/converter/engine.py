"""The conversion engine: the audio of a video to an MP3 at ffmpeg's own speed, isolated.

Each file is described by a long-lived reader child (PyAV) and converted by an ffmpeg
child with CPU, memory, output-size and wall-clock limits; video is never decoded. MP3
audio is remuxed by the reader child itself, sparing an ffmpeg start.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import BinaryIO

from alchemist.converter.child import ChildLimits, run_ffmpeg
from alchemist.converter.errors import NoAudioTrackError, TooLongError
from alchemist.converter.ffmpeg import build_command
from alchemist.converter.options import ConversionLimits, ConversionOptions, ConversionResult
from alchemist.converter.reader import MediaInfo, MediaReader
from alchemist.converter.spool import SpoolDirectory, copy_file_to_stream

Source = str | os.PathLike[str] | BinaryIO
Destination = str | os.PathLike[str] | BinaryIO
Progress = Callable[[float, float | None], None]
TRUNCATION_TOLERANCE = 0.5
# The duration limit is enforced on what is read, not on what the file claims: ffmpeg reads
# up to READ_PAST_LIMIT beyond it, so a file longer than it says shows itself, and anything
# past DURATION_SLACK (frame rounding, a bitrate estimate) over the limit is refused.
DURATION_SLACK = 0.5
READ_PAST_LIMIT = 1.0


class ConversionEngine:
    """Converts files or streams to MP3; safe to share between threads."""

    def __init__(self, limits: ConversionLimits | None = None, spool_dir: Path | None = None) -> None:
        self.limits = limits or ConversionLimits()
        self._reader = MediaReader(
            self.limits.probe_timeout, self.limits.memory_bytes, self.limits.max_output_bytes
        )
        self._spool = SpoolDirectory(spool_dir, self.limits.spool_max_bytes)

    def convert(
        self,
        source: Source,
        destination: Destination,
        options: ConversionOptions | None = None,
        progress: Progress | None = None,
        filename: str | None = None,
        max_output_bytes: int | None = None,
    ) -> ConversionResult:
        """Write the default (else first) audio track of `source` as an MP3 to `destination`.

        `max_output_bytes` bounds this output below the engine's limit (an upload's allowance).
        """
        options = options or ConversionOptions()
        ceiling = min(self.limits.max_output_bytes, max_output_bytes or self.limits.max_output_bytes)
        with self._source_path(source) as source_path:
            info = self._reader.probe(source_path)
            name = filename or (None if _is_stream(source) else os.fspath(source))  # type: ignore[arg-type]
            return self._convert_described(source_path, info, destination, options, progress, name, ceiling)

    def probe(self, source: str | os.PathLike[str]) -> MediaInfo:
        """Describe a file without converting it."""
        return self._reader.probe(os.fspath(source))

    def close(self) -> None:
        """Stop the reader child."""
        self._reader.close()

    def _convert_described(
        self,
        source_path: str,
        info: MediaInfo,
        destination: Destination,
        options: ConversionOptions,
        progress: Progress | None,
        filename: str | None,
        max_output_bytes: int,
    ) -> ConversionResult:
        track = info.chosen_track()
        if track is None:
            raise NoAudioTrackError("the file has no audio track to convert")
        source_duration = track.duration or info.duration
        limit = self.limits.max_duration
        if source_duration is not None and source_duration > limit:
            raise TooLongError(f"the media lasts {source_duration:.0f} s; the maximum is {limit:.0f} s")
        start = options.start or 0.0
        if start >= limit:
            raise TooLongError(f"the start ({start:.0f} s) is past the maximum duration of {limit:.0f} s")
        expected = _expected_seconds(source_duration, options)
        copy = track.codec == "mp3" and not options.reshapes_audio
        tags = {**info.tags, **track.tags}
        title = tags.get("title") or options.title or _title_from(filename)
        budget = source_duration or limit
        child_limits = ChildLimits(
            cpu_seconds=self.limits.cpu_seconds(budget),
            memory_bytes=self.limits.memory_bytes,
            output_bytes=max_output_bytes,
            wall_seconds=self.limits.wall_seconds(budget),
        )
        report = None if progress is None else (lambda done: progress(done, expected))
        remux = copy and options.start is None and options.end is None and source_duration
        with self._destination_path(destination) as output_path:
            if remux:
                try:  # stops as soon as the copy passes the limit
                    seconds_done = self._reader.remux(
                        source_path, track.index, output_path, {**tags, "title": title},
                        max_seconds=limit + DURATION_SLACK,
                    )  # fmt: skip
                except TooLongError as exc:
                    raise TooLongError(f"the media lasts longer than the maximum of {limit:.0f} s") from exc
                if report is not None:
                    report(seconds_done)
            else:
                command = build_command(
                    source_path, output_path, info, track, options,
                    copy=copy, max_seconds=limit + READ_PAST_LIMIT, title=title,
                )  # fmt: skip
                seconds_done = run_ffmpeg(command, child_limits, report).seconds_done
                if start + seconds_done > limit + DURATION_SLACK:  # the partial output is removed
                    raise TooLongError(f"the media lasts longer than the maximum of {limit:.0f} s")
            output_bytes = os.path.getsize(output_path)
        return ConversionResult(
            duration=seconds_done,
            source_duration=expected or seconds_done,
            copied=copy,
            output_bytes=output_bytes,
            tags={**tags, "title": title},
            warning=_truncation_warning(seconds_done, expected),
        )

    @contextmanager
    def _source_path(self, source: Source) -> Iterator[str]:
        if _is_stream(source):
            with self._spool.readable_path(source) as path:  # type: ignore[arg-type]
                yield path
        else:
            yield os.fspath(source)  # type: ignore[arg-type]

    @contextmanager
    def _destination_path(self, destination: Destination) -> Iterator[str]:
        if _is_stream(destination):
            with self._spool.writable_path() as path:
                yield path
                copy_file_to_stream(path, destination)  # type: ignore[arg-type]
            return
        final = Path(os.fspath(destination))  # type: ignore[arg-type]
        # Written under a temp name and renamed: a failed run never leaves a half MP3.
        partial = final.with_name(f".{final.name}.{os.getpid()}.part")
        try:
            yield str(partial)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)


def _is_stream(value: object) -> bool:
    return hasattr(value, "read") or hasattr(value, "write")


def _title_from(filename: str | None) -> str:
    return PurePath(filename).stem if filename else "audio"


def _expected_seconds(duration: float | None, options: ConversionOptions) -> float | None:
    if duration is None:
        return None
    end = min(duration, options.end) if options.end is not None else duration
    return max(0.0, end - (options.start or 0.0))


def _truncation_warning(done: float, expected: float | None) -> str | None:
    if expected is None or done >= expected - TRUNCATION_TOLERANCE:
        return None
    return f"the file is damaged or truncated: converted {done:.1f} s of the {expected:.1f} s it claims"
