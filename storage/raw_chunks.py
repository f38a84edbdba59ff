"""Checksums of stored shard bytes, so byte ranges of a shard can be served as stored and still verified.

A shard of our layout (``storage/zarr_.py``) is its inner chunks, each ending in the crc32c of its bytes,
then the shard index (``(offset, nbytes)`` as two little-endian uint64 per inner chunk) ending in its own
crc32c. :func:`shard_layout` reads that from an array's ``zarr.json``, :func:`parse_index` checks the
index and :func:`verify_span` every inner chunk a byte range touches, so a server never hands out bytes
of a chunk that fails its checksum (the zarr view, ``storage/zarr_view.py``). It knows nothing of HTTP.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from labservice.storage._common import EMPTY_CHUNK, crc_ok

CRC = 4


@dataclass(frozen=True)
class ShardLayout:
    """Where the checksums of one array's shards are: inner chunks per shard (along each dimension and in
    all) and the index length."""

    per: tuple[int, ...]

    @property
    def nchunks(self) -> int:
        return prod(self.per)

    @property
    def index_nbytes(self) -> int:
        return self.nchunks * 16 + CRC


def _names(codecs: list[dict[str, Any]]) -> list[str]:
    return [c.get("name", "") for c in codecs]


def shard_layout(doc: dict[str, Any]) -> ShardLayout | None:
    """The layout of a sharded array whose inner chunks and index both end in a crc32c (index at the
    end); None for any other codec chain, whose bytes this module cannot check."""
    codecs = doc.get("codecs", [])
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return None
    conf = codecs[0].get("configuration", {})
    inner = _names(conf.get("codecs", []))
    if inner[:1] != ["bytes"] or inner[-1:] != ["crc32c"] or conf.get("index_location", "end") != "end":
        return None
    if _names(conf.get("index_codecs", [])) != ["bytes", "crc32c"]:
        return None
    shard = doc["chunk_grid"]["configuration"]["chunk_shape"]
    return ShardLayout(tuple(s // c for s, c in zip(shard, conf["chunk_shape"], strict=True)))


@dataclass(frozen=True)
class ShardIndex:
    """A verified shard index as the written inner chunks sorted by offset: their byte spans and their
    entries in the index (C order over :attr:`ShardLayout.per`); chunks never overlap, so the ends are
    sorted too and the chunks a byte range touches are found by bisection."""

    starts: list[int]
    ends: list[int]
    entries: list[int]

    def touching(self, start: int, stop: int) -> range:
        """Positions (in this sorted order) of the chunks that overlap bytes [start, stop)."""
        return range(bisect_right(self.ends, start), bisect_left(self.starts, stop))


def parse_index(layout: ShardLayout, raw: bytes | memoryview) -> ShardIndex | None:
    """The shard index, or None when it fails its checksum or its chunks overlap."""
    if len(raw) != layout.index_nbytes or not crc_ok(raw):
        return None
    table = np.frombuffer(raw, dtype="<u8", count=layout.nchunks * 2).reshape(layout.nchunks, 2)
    written = np.flatnonzero(table[:, 0] != EMPTY_CHUNK)
    order = written[np.argsort(table[written, 0], kind="stable")]
    starts = table[order, 0].tolist()
    ends = (table[order, 0] + table[order, 1]).tolist()
    if any(e <= s for s, e in zip(starts, ends, strict=True)) or any(
        b < a for a, b in zip(ends, starts[1:], strict=False)
    ):
        return None
    return ShardIndex(starts, ends, order.tolist())


class DamagedShard(Exception):
    """A byte range touches an inner chunk (``chunk`` is its entry in the shard index, C order over
    :attr:`ShardLayout.per`) or an index (``chunk`` None) that fails its checksum."""

    def __init__(self, chunk: int | None) -> None:
        super().__init__("the shard index" if chunk is None else f"inner chunk number {chunk}")
        self.chunk = chunk


def verify_span(
    layout: ShardLayout,
    index: ShardIndex,
    size: int,
    start: int,
    body: memoryview,
    read: Callable[[int, int], bytes | memoryview],
) -> None:
    """Check every inner chunk that overlaps ``body`` (the shard's bytes from ``start``); raise
    :class:`DamagedShard` for the first that fails. The index region, if touched, is checked by the
    caller through :func:`parse_index`. ``read(a, b)`` gives shard bytes [a, b) for a chunk only partly
    inside ``body``. Bytes outside any chunk and the index (none in shards zarr writes) carry no checksum.
    """
    stop = start + len(body)
    data_end = size - layout.index_nbytes
    for i in index.touching(start, stop):
        a, b = index.starts[i], index.ends[i]
        if b > data_end:
            raise DamagedShard(index.entries[i])  # a chunk that runs into the index: the index lies
        chunk = body[a - start : b - start] if a >= start and b <= stop else read(a, b)
        if not crc_ok(chunk):
            raise DamagedShard(index.entries[i])
