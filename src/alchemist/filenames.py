"""Uploaded file names made safe once, at upload: the stored name is what every reader shows.

Emails put the name in a Subject header, downloads in Content-Disposition, the converter in an
ffmpeg argument and the page in its list: a line feed breaks the first two, a NUL byte the
third, and a right-to-left override makes a name read backwards in the last. So the stored name
is printable text on one line, at most MAX_FILENAME_BYTES of UTF-8, and keeps its extension.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath, PureWindowsPath

MAX_FILENAME_BYTES = 255  # the job's filename column, and what most filesystems allow
MAX_EXTENSION_BYTES = 16  # a longer "extension" is just part of the name
FALLBACK = "upload"
ZERO_WIDTH_JOINER = "\u200d"
# Bidirectional controls (embeddings, overrides, isolates, marks): they reorder what is shown.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Never kept: controls (C0, DEL, C1), lone surrogates, unassigned code points.
DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Cn"})


def sanitize_filename(raw: str, max_bytes: int = MAX_FILENAME_BYTES) -> str:
    """A one-line, printable name of at most `max_bytes` UTF-8 bytes that keeps its extension.

    Only the last path component counts, whitespace runs become one space, controls and bidi
    controls go; a name left empty becomes "upload" (with the extension, if there was one).
    """
    text = unicodedata.normalize("NFC", raw)
    # Whitespace of any kind (tab, CR, LF, NEL, U+2028...) becomes a space, so `a\nb` reads `a b`.
    text = " ".join("".join(_kept(char) for char in text).split())
    name = PureWindowsPath(PurePosixPath(text).name).name.strip()  # either kind of folder separator
    stem, extension = _split_extension(name)
    stem = stem.strip(" .") or FALLBACK  # "..", trailing dots (Windows drops them): no name
    return _truncate(stem, max_bytes - len(extension.encode())) + extension


def _kept(char: str) -> str:
    """The character itself, a space for whitespace, or nothing for a control character."""
    if char.isspace():
        return " "
    if char in BIDI_CONTROLS or unicodedata.category(char) in DROPPED_CATEGORIES:
        return ""
    return char


def _split_extension(name: str) -> tuple[str, str]:
    """("clip", ".mp4") for "clip.mp4" and ("", ".mp4") for ".mp4"; long or spaced ones are no extension."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not extension.strip(".") or " " in extension or len(dot + extension) > MAX_EXTENSION_BYTES:
        return name, ""
    return stem, dot + extension


def _truncate(text: str, max_bytes: int) -> str:
    """At most `max_bytes` of UTF-8, cut between characters, without a dangling joiner or space."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    # errors="ignore" drops the partial character the byte cut may leave at the end.
    cut = encoded[: max(0, max_bytes)].decode(errors="ignore")
    return cut.rstrip(" ." + ZERO_WIDTH_JOINER) or FALLBACK[: max(0, max_bytes)]
