"""The one parser of HTTP ``Range`` headers (job result files and the zarr view both use it).

A single range is served: ``bytes=a-b``, ``bytes=a-`` (to the end) or ``bytes=-n`` (the last n bytes).
Anything else, malformed or outside the object, raises
:class:`~labservice.errors.RangeNotSatisfiable`, which the error map answers with 416, the usual
``{detail, code}`` body and ``Content-Range: bytes */<size>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labservice.errors import RangeNotSatisfiable

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, stop)`` of an object of ``size`` bytes."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` header of a 206 answer."""
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


def parse_byte_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a ``Range`` header asks for; None when there is no header.

    Raises
    ------
    RangeNotSatisfiable
        When the header is not one ``bytes=`` range, or the range lies outside the object.
    """
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if m is None or m.group(1) == m.group(2) == "":
        raise RangeNotSatisfiable(
            f"Range must be one range like 'bytes=0-99', 'bytes=100-' or 'bytes=-4'; got {header!r}", size=size
        )
    first, last = m.group(1), m.group(2)
    if first == "":  # a suffix: the last n bytes
        start, stop = max(size - int(last), 0), size
    else:
        start = int(first)
        stop = size if last == "" else min(int(last) + 1, size)
    if start >= stop:
        raise RangeNotSatisfiable(f"Range {header!r} is outside the object of {size} bytes", size=size)
    return ByteRange(start, stop, size)
