"""The one HTTP Range parser (job files and the zarr view both use it)."""

from __future__ import annotations

import pytest

from labservice.errors import RangeNotSatisfiable
from labservice.http_errors import lab_error_response
from labservice.http_ranges import ByteRange, parse_byte_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 10, 100)),
        ("bytes=90-", ByteRange(90, 100, 100)),
        ("bytes=-7", ByteRange(93, 100, 100)),
        ("bytes=-500", ByteRange(0, 100, 100)),  # a suffix longer than the object: all of it
        ("bytes=95-1000", ByteRange(95, 100, 100)),  # an end past the object is cut to it
        (" bytes=1-1 ", ByteRange(1, 2, 100)),
    ],
)
def test_satisfiable_ranges(header: str | None, expected: ByteRange | None) -> None:
    assert parse_byte_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=abc", "items=0-9", "bytes=0-9,20-29", "bytes=-", "bytes=9-2", "bytes=100-", "bytes=-0", ""]
)
def test_bad_ranges_raise_range_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_byte_range(header, 100)
    response = lab_error_response(info.value)
    assert response.status_code == 416 and response.headers["content-range"] == "bytes */100"
    assert b'"code":"range_not_satisfiable"' in response.body


def test_content_range_header() -> None:
    span = parse_byte_range("bytes=10-19", 50)
    assert span is not None and span.content_range == "bytes 10-19/50" and span.length == 10
