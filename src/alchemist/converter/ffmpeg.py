"""The ffmpeg command line for one conversion (the static binary from imageio-ffmpeg)."""

from __future__ import annotations

from functools import cache

from alchemist.converter.formats import PROTOCOL_WHITELIST
from alchemist.converter.options import ConversionOptions
from alchemist.converter.reader import AudioTrack, MediaInfo

DEMUXER_OF_FORMAT = {
    "mov,mp4,m4a,3gp,3g2,mj2": "mov",
    "matroska,webm": "matroska",
}


@cache
def ffmpeg_executable() -> str:
    """Path of the ffmpeg binary shipped in the imageio-ffmpeg wheel."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def build_command(
    source: str,
    destination: str,
    info: MediaInfo,
    track: AudioTrack,
    options: ConversionOptions,
    *,
    copy: bool,
    max_seconds: float,
    title: str,
) -> list[str]:
    """Arguments that write the chosen track of `source` as an MP3 at `destination`.

    The output ends at `max_seconds` into the media at the latest, and at `options.end`.
    """
    demuxer = DEMUXER_OF_FORMAT.get(info.format, info.format.split(",")[0])
    command = [
        ffmpeg_executable(),
        "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1", "-stats_period", "0.5",
        # The demuxer the reader found (already checked against the allowlist) and no
        # protocol but plain files: a media file can't make ffmpeg open anything else.
        "-protocol_whitelist", PROTOCOL_WHITELIST, "-format_whitelist", demuxer, "-f", demuxer,
    ]  # fmt: skip
    # Discarded streams are skipped by the demuxer: video bytes are never even read.
    for index in range(info.stream_count):
        if index != track.index:
            command += [f"-discard:{index}", "all"]
    if options.start is not None:
        command += ["-ss", f"{options.start:.3f}"]
    command += ["-i", "file:" + source, "-map", f"0:{track.index}", "-vn", "-sn", "-dn"]
    # Always a length, whatever the file claims to last: nothing past `max_seconds` of the media
    # is read or written (the output starts at `start`).
    start = options.start or 0.0
    length = max_seconds - start if options.end is None else min(options.end, max_seconds) - start
    command += ["-t", f"{max(length, 0.001):.3f}"]
    if copy:
        command += ["-c:a", "copy"]
    else:
        command += ["-c:a", "libmp3lame"]
        if options.vbr_quality is not None:
            command += ["-q:a", str(options.vbr_quality)]
        else:
            command += ["-b:a", options.bitrate]
        if options.mono or track.channels > 2 or not track.channels:
            command += ["-ac", "1" if options.mono else "2"]
        if options.sample_rate is not None:
            command += ["-ar", str(options.sample_rate)]
    # An argument can't hold a NUL (exec refuses it): names are cleaned at upload, this is the backstop.
    command += ["-map_metadata", "-1", "-metadata", f"title={_arg(title)}"]
    for key, value in {**info.tags, **track.tags}.items():
        if key != "title":
            command += ["-metadata", f"{_arg(key)}={_arg(value)}"]
    command += ["-id3v2_version", "3", "-write_xing", "1", "-f", "mp3", "-y", "file:" + destination]
    return command


def _arg(text: str) -> str:
    """Text fit for a command-line argument (no NUL byte)."""
    return text.replace("\x00", "")
