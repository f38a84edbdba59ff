"""Coalescing byte ranges of one stored object into fewer reads.

A shard stores its inner chunks back to back in Morton order, so the chunks of a box are often runs of
neighbouring byte ranges. On object storage every ranged GET costs a round trip; merging a run into one
GET saves them. Each chunk is still cut out of the merged bytes and checked against its own crc32c by the
caller, so coalescing never changes what is served.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["coalesce"]


def coalesce(ranges: Sequence[tuple[int, int]], max_gap: int = 0,
             max_bytes: int = 8 << 20) -> list[tuple[int, int, list[int]]]:
    """Group ``(start, stop)`` byte ranges of one object into reads ``(start, stop, members)``.

    Parameters
    ----------
    ranges : sequence of (int, int)
        Half-open byte ranges, in any order; they may overlap or repeat.
    max_gap : int
        Merge two ranges when at most this many unrequested bytes lie between them (0: only ranges that
        touch or overlap). Gap bytes are fetched and thrown away.
    max_bytes : int
        Never grow a read beyond this many bytes (a range longer than it is read alone), so a big
        request still becomes several reads that run concurrently.

    Returns
    -------
    list of (int, int, list of int)
        The reads in ascending order; ``members`` are the indices into ``ranges`` each read covers.
    """
    if max_gap < 0 or max_bytes < 1:
        raise ValueError(f"max_gap must be >= 0 and max_bytes >= 1; got {max_gap}, {max_bytes}")
    out: list[tuple[int, int, list[int]]] = []
    for i in sorted(range(len(ranges)), key=lambda k: (ranges[k][0], ranges[k][1])):
        a, b = ranges[i]
        if out:
            s, e, members = out[-1]
            if a - e <= max_gap and (b <= e or b - s <= max_bytes):  # inside the read, or it stays small
                out[-1] = (s, max(b, e), members)
                members.append(i)
                continue
        out.append((a, b, [i]))
    return out
