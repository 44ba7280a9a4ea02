"""HTTP Range requests (one range of bytes), as RFC 9110 describes them."""

from __future__ import annotations

import re

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiableError(Exception):
    """The range lies outside the file (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) for a single byte range; None means the whole file."""
    if not header:
        return None
    match = RANGE.match(header.strip())
    if not match:
        return None  # several ranges or another unit: answer with the whole file
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiableError(header)
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiableError(header)
    return start, end
