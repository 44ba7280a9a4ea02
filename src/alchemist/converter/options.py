"""What a conversion is asked to do, the limits it runs under, and what it reports."""

from __future__ import annotations

import re
from dataclasses import dataclass

BITRATE_PATTERN = re.compile(r"^(\d{2,3})k$")
LAME_BITRATES = {32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320}
MP3_SAMPLE_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}


class InvalidOptionsError(ValueError):
    """An option is out of range; the message names it."""


@dataclass(frozen=True)
class ConversionOptions:
    """MP3 settings: CBR bitrate (default 192k) or VBR quality, rate, mono, trim, title."""

    bitrate: str = "192k"
    vbr_quality: int | None = None
    sample_rate: int | None = None
    mono: bool = False
    start: float | None = None
    end: float | None = None
    title: str | None = None

    def __post_init__(self) -> None:
        match = BITRATE_PATTERN.match(self.bitrate)
        if not match or int(match.group(1)) not in LAME_BITRATES:
            raise InvalidOptionsError(
                f"bitrate {self.bitrate!r} is not an MP3 bitrate "
                f"({', '.join(f'{b}k' for b in sorted(LAME_BITRATES))})"
            )
        if self.vbr_quality is not None and not 0 <= self.vbr_quality <= 9:
            raise InvalidOptionsError("VBR quality must be 0 (best) to 9 (smallest)")
        if self.sample_rate is not None and self.sample_rate not in MP3_SAMPLE_RATES:
            raise InvalidOptionsError(f"sample rate {self.sample_rate} is not an MP3 rate")
        if self.start is not None and self.start < 0:
            raise InvalidOptionsError("start must be >= 0 seconds")
        if self.end is not None and self.end <= (self.start or 0):
            raise InvalidOptionsError("end must be after start")

    @property
    def reshapes_audio(self) -> bool:
        """True when the options change the audio itself, so an MP3 source can't be copied."""
        return self.vbr_quality is not None or self.sample_rate is not None or self.mono


@dataclass(frozen=True)
class ConversionLimits:
    """Bounds on one conversion, enforced in its child process."""

    max_duration: float = 4 * 3600
    max_output_bytes: int = 1 << 30
    memory_bytes: int = 2 << 30
    cpu_seconds_base: float = 60
    cpu_seconds_per_media_second: float = 1.0
    wall_seconds_base: float = 60
    wall_seconds_per_media_second: float = 1.0
    probe_timeout: float = 20
    spool_max_bytes: int = 20 << 30

    def cpu_seconds(self, duration: float) -> int:
        """CPU-time limit for media of this duration."""
        return int(self.cpu_seconds_base + self.cpu_seconds_per_media_second * duration)

    def wall_seconds(self, duration: float) -> float:
        """Wall-clock limit for media of this duration."""
        return self.wall_seconds_base + self.wall_seconds_per_media_second * duration


@dataclass(frozen=True)
class ConversionResult:
    """What came out: seconds of audio, whether the MP3 was copied, and any warning."""

    duration: float
    source_duration: float
    copied: bool
    output_bytes: int
    tags: dict[str, str]
    warning: str | None = None

    @property
    def truncated(self) -> bool:
        """True when less audio came out than the source claims (a damaged file)."""
        return self.warning is not None
