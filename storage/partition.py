"""Give shards to workers by Morton range, as JHTDB spreads a time step over its database nodes.

Every shard (sz, sy, sx) of a variable gets the Morton key of its index. Sorting the shards by key and
cutting the sorted list into ``n`` contiguous pieces keeps each piece compact in space, so a worker that
owns a neighbourhood rarely needs a halo from another worker.
"""

from __future__ import annotations

import numpy as np

from labservice.errors import InvalidInput
from labservice.storage._common import check_variable, shard_counts
from labservice.storage.metadata import DatasetMeta
from labservice.storage.morton import encode3

__all__ = ["partition_of", "partitions", "shard_counts", "shard_keys"]


def shard_keys(meta: DatasetMeta, variable: str) -> tuple[np.ndarray, np.ndarray]:
    """All shards of one time step of ``variable`` sorted by Morton key.

    Returns
    -------
    shards : ndarray of int64, shape (N, 3)
        Shard indices (sz, sy, sx), in key order.
    keys : ndarray of uint64, shape (N,)
        ``encode3(sx, sy, sz)``, increasing.
    """
    check_variable(meta, variable)
    nz, ny, nx = shard_counts(meta, variable)
    sz, sy, sx = (a.ravel() for a in np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij"))
    keys = encode3(sx, sy, sz)
    order = np.argsort(keys, kind="stable")
    return np.stack([sz, sy, sx], axis=1)[order], keys[order]


def partitions(meta: DatasetMeta, variable: str, n: int) -> list[list[tuple[int, int, int]]]:
    """Split the shards of ``variable`` into ``n`` contiguous Morton ranges of near-equal size.

    Parameters
    ----------
    meta : DatasetMeta
    variable : str
    n : int
        Number of partitions (workers); partitions are empty when ``n`` exceeds the shard count.

    Returns
    -------
    list of list of (sz, sy, sx)
        ``n`` lists, each in increasing key order; together they hold every shard exactly once.
    """
    if n < 1:
        raise InvalidInput(f"number of partitions must be >= 1; got {n}")
    shards, _ = shard_keys(meta, variable)
    return [[(int(a), int(b), int(c)) for a, b, c in piece] for piece in np.array_split(shards, n)]


def partition_of(meta: DatasetMeta, variable: str, n: int, shard: tuple[int, int, int]) -> int:
    """Index of the partition (of ``n``) that owns ``shard`` (sz, sy, sx)."""
    shards, _ = shard_keys(meta, variable)
    pos = int(np.flatnonzero((shards == np.asarray(shard)).all(axis=1))[0])
    sizes = [len(p) for p in np.array_split(np.arange(len(shards)), n)]
    return int(np.searchsorted(np.cumsum(sizes), pos, side="right"))
