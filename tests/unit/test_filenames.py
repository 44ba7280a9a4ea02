"""Uploaded file names: one printable line, at most 255 bytes of UTF-8, extension kept."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alchemist.filenames import BIDI_CONTROLS, MAX_FILENAME_BYTES, sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("clip.mp4", "clip.mp4"),
        ("a\nb.mp4", "a b.mp4"),  # a line feed would end an email header or break Content-Disposition
        ("a\r\nSubject: x.mp4", "a Subject: x.mp4"),
        ("a\x00b.mp4", "ab.mp4"),  # a NUL can't be an ffmpeg argument
        ("bell\x07\x1b[31m.mp4", "bell[31m.mp4"),
        ("del\x7f\x85x.mp4", "del x.mp4"),  # DEL goes; NEL (U+0085) is a line break
        ("line\u2028sep.mp4", "line sep.mp4"),
        ("\u202eevil\u202cgpj.mp4", "evilgpj.mp4"),  # no right-to-left override
        ("\u2067iso\u2069late.mp4", "isolate.mp4"),
        ("my \t  clip .mp4", "my clip.mp4"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ann\\clip.mov", "clip.mov"),
        ("folder/", "folder"),
        ("..", "upload"),
        ("", "upload"),
        ("\x00\n\t", "upload"),
        (".mp4", "upload.mp4"),
        ("clip.", "clip"),
        ("e\u0301te\u0301.mp4", "été.mp4"),  # one spelling (NFC) for the same name
        ("😀 party.mkv", "😀 party.mkv"),
        ("a.tar.gz", "a.tar.gz"),
        ("version 1.2 final", "version 1.2 final"),  # "2 final" has a space: not an extension
    ],
)
def test_names_are_made_safe(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


@pytest.mark.parametrize("char", ["x", "é", "😀", "👨\u200d👩\u200d👧"])
def test_long_names_are_cut_between_characters_and_keep_their_extension(char: str) -> None:
    name = sanitize_filename(char * 1000 + ".mp4")
    assert name.endswith(".mp4")
    # Full up to the last whole character (4 bytes), and a dangling joiner (3 bytes) dropped.
    assert MAX_FILENAME_BYTES - 7 <= len(name.encode()) <= MAX_FILENAME_BYTES
    stem = name.removesuffix(".mp4")
    assert set(stem) <= set(char)  # nothing split: only whole characters of the original
    assert not stem.endswith("\u200d")  # no joiner left dangling


def test_an_overlong_extension_is_part_of_the_name() -> None:
    name = sanitize_filename("clip." + "x" * 400)
    assert name.startswith("clip.") and len(name.encode()) == MAX_FILENAME_BYTES


@given(st.text(max_size=600))
def test_any_text_gives_a_safe_name(raw: str) -> None:
    name = sanitize_filename(raw)
    assert 0 < len(name.encode()) <= MAX_FILENAME_BYTES
    assert name == name.strip() and "  " not in name
    assert not any(char.isspace() and char != " " for char in name)
    assert not any(unicodedata.category(char) in ("Cc", "Cs", "Cn") for char in name)
    assert not set(name) & BIDI_CONTROLS
    assert "/" not in name and "\\" not in name
    assert sanitize_filename(name) == name  # stable: sanitising twice changes nothing
