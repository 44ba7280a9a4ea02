"""HTTP Range requests (one range of bytes), as RFC 9110 describes them.

Any header gives an answer: one satisfiable range (206), the whole file when the header is not
one byte range we serve (200: a server may ignore Range), or 416. Positions are compared, never
converted whole: int() refuses more than 4300 digits, and no file has more than 19.
"""

from __future__ import annotations

import re

# ASCII digits only: \d would also match other scripts' digits, which int() accepts.
RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII | re.IGNORECASE)
MAX_DIGITS = 18  # 10**18 bytes: past any file, and cheap to convert
BEYOND_ANY_FILE = 10**MAX_DIGITS


class RangeNotSatisfiableError(Exception):
    """The range lies outside the file (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) for a single byte range; None means the whole file."""
    if not header:
        return None
    match = RANGE.fullmatch(header.strip())
    if not match:
        return None  # several ranges, another unit or garbage: answer with the whole file
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last `last` bytes
        length = _position(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiableError(header)
        return max(0, size - length), size - 1
    start = _position(first)
    if start >= size or (last and _position(last) < start):
        raise RangeNotSatisfiableError(header)
    end = min(_position(last), size - 1) if last else size - 1
    return start, end


def _position(digits: str) -> int:
    """The number, or one larger than any file when it has too many digits to be a position."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= MAX_DIGITS else BEYOND_ANY_FILE
