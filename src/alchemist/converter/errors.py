"""Typed conversion errors, each with a message a user can read."""

from __future__ import annotations


class ConversionError(Exception):
    """A conversion did not produce an MP3; `permanent` means retrying cannot help."""

    permanent = True
    code = "conversion_failed"


class NotMediaError(ConversionError):
    """The file is not a media file, or its format is not accepted."""

    code = "not_media"


class NoAudioTrackError(ConversionError):
    """The file has no audio track to convert."""

    code = "no_audio"


class TooLongError(ConversionError):
    """The media lasts longer than the configured maximum."""

    code = "too_long"


class ConversionFailedError(ConversionError):
    """The decoder or encoder failed; the message carries its reason."""


class ResourceLimitError(ConversionError):
    """The conversion exceeded its CPU, memory, output size or wall-clock limit."""

    code = "limit_exceeded"


class EngineUnavailableError(ConversionError):
    """The engine itself cannot run right now (missing binary, full spool); worth retrying."""

    permanent = False
    code = "engine_unavailable"
