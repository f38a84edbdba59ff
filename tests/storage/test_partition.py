"""Shards are split into contiguous Morton ranges that cover every shard once."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.errors import InvalidInput
from labservice.storage import DatasetMeta
from labservice.storage.morton import encode3
from labservice.storage.partition import partition_of, partitions, shard_counts, shard_keys


def meta(shape: tuple[int, int, int]) -> DatasetMeta:
    return DatasetMeta.model_validate({
        "id": "p", "title": "p",
        "grid": {a: {"size": n, "start": 0.0, "step": 1.0} for a, n in zip("xyz", shape, strict=False)},
        "times": [0.0], "variables": {"u": {"components": ["a"]}},
        "chunks": (8, 8, 8), "shards": (16, 16, 16),
    })


@pytest.mark.parametrize("shape", [(64, 64, 64), (80, 48, 33), (16, 16, 16)])
@pytest.mark.parametrize("n", [1, 3, 8, 100])
def test_partitions_cover_all_shards_in_contiguous_key_ranges(shape: tuple[int, int, int], n: int) -> None:
    m = meta(shape)
    counts = shard_counts(m, "u")
    assert counts == tuple(-(-s // 16) for s in shape[::-1])
    parts = partitions(m, "u", n)
    assert len(parts) == n
    flat = [s for p in parts for s in p]
    expected = {(z, y, x) for z in range(counts[0]) for y in range(counts[1]) for x in range(counts[2])}
    assert len(flat) == len(expected) and set(flat) == expected
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    keys = [int(encode3(s[2], s[1], s[0])) for s in flat]
    assert keys == sorted(keys)  # concatenated partitions are in key order: each one is a key range
    for i, p in enumerate(parts):
        for s in p:
            assert partition_of(m, "u", n, s) == i


def test_shard_keys_and_locality() -> None:
    shards, keys = shard_keys(meta((64, 64, 64)), "u")  # 4x4x4 shards
    assert len(shards) == 64
    # Z order: x moves first, then y, then z (shards are (sz, sy, sx)).
    assert shards[:5].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0]]
    assert np.all(np.diff(keys.astype(np.int64)) > 0)
    # With 8 partitions of a 4^3 shard grid, each Morton range is exactly one 2x2x2 block of shards.
    for p in partitions(meta((64, 64, 64)), "u", 8):
        a = np.array(p)
        assert (a.max(axis=0) - a.min(axis=0)).tolist() == [1, 1, 1]
    with pytest.raises(InvalidInput, match=">= 1"):
        partitions(meta((16, 16, 16)), "u", 0)
