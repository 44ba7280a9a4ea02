"""Range headers: one byte range (206), the whole file (200) or 416, whatever the header."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alchemist.gateway.ranges import RangeNotSatisfiableError, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=0-0", (0, 0)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_single_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=-0", "bytes=2000-3000"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 1000)


THOUSANDS = "9" * 5000  # int() refuses more than 4300 digits (Python >= 3.11)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"bytes=0-{THOUSANDS}", (0, 999)),  # the end is clamped to the file
        (f"bytes=-{THOUSANDS}", (0, 999)),  # a suffix longer than the file is the file
        ("bytes=0000000000000000000000000000001-2", (1, 2)),  # leading zeros are not size
        ("bytes=-1-5", None),  # a negative start is no range: the whole file
        ("bytes=--5", None),
        ("bytes=0-1,5-6", None),
        ("bytes=0-1, 5-6", None),
        ("bytes=abc", None),
        ("bytes=1.5-2", None),
        ("bytes=+1-2", None),
        ("bytes=\u0663-\u0665", None),  # Arabic-Indic digits: int() would accept them
        ("bytes=\xb2-\xb3", None),  # superscripts, as a latin-1 header byte reads
        ("bytes= 0-5", None),
        ("BYTES=0-5", (0, 5)),  # the unit is case-insensitive
        ("  bytes=0-5  ", (0, 5)),
        ("bytes=0-5\x00", None),
        ("bytes", None),
        ("=", None),
    ],
)
def test_any_header_is_a_range_or_the_whole_file(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header", [f"bytes={THOUSANDS}-", f"bytes={THOUSANDS}-{THOUSANDS}", f"bytes=5-{'0' * 5000}"]
)
def test_huge_positions_are_unsatisfiable_not_errors(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 1000)


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=-5", "bytes=0-0"])
def test_nothing_of_an_empty_file_can_be_asked_for(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 0)


@given(st.text(max_size=60), st.integers(min_value=0, max_value=10**12))
def test_any_text_gives_a_range_inside_the_file_the_whole_file_or_416(header: str, size: int) -> None:
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiableError:
        return
    if span is not None:
        start, end = span
        assert 0 <= start <= end < size
