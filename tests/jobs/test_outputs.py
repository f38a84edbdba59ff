"""Shard encoding of cutout outputs: byte-identical to zarr's own sharding codec, edges included."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype

from labservice.cutout.layout import layout_for
from labservice.cutout.region import plan_cutout
from labservice.jobs.outputs import create_cutout_zarr, encode_shard
from labservice.jobs.scratch import Scratch
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable

SHAPE = (40, 24, 36)  # not multiples of the shard: edge shards are partial


@pytest.fixture(scope="module")
def array_meta(tmp_path_factory) -> bytes:
    s = Scratch(str(tmp_path_factory.mktemp("enc")))
    meta = DatasetMeta(
        id="enc",
        title="shard encoding",
        grid=Grid(**{a: Axis(size=n, start=0.0, step=1.0) for a, n in zip("zyx", SHAPE, strict=True)}),
        times=[0.0, 1.0],
        variables={"v": Variable(components=["a", "b", "c"], units="m/s")},
    )
    layout = layout_for(meta, plan_cutout(meta, "v"), [0, 1], keep_time_axis=True)
    create_cutout_zarr(s, "job", "out.zarr", layout, (16, 16, 16), (8, 8, 8))
    return s.read_bytes("job", "out.zarr/v/zarr.json")


@pytest.mark.parametrize("shard", [(0, 0, 0), (2, 1, 2), (1, 0, 2), (2, 0, 0)])
def test_encode_shard_matches_zarr_bytes(array_meta, shard):
    corner = tuple(i * 16 for i in shard)
    extent = tuple(min(16, n - c) for n, c in zip(SHAPE, corner, strict=True))
    block = np.random.default_rng(sum(shard)).standard_normal((*extent, 3)).astype(np.float32)
    objects = {"zarr.json": default_buffer_prototype().buffer.from_bytes(array_meta)}
    arr = zarr.open_array(zarr.storage.MemoryStore(store_dict=objects), mode="r+")
    sl = tuple(slice(c, c + e) for c, e in zip(corner, extent, strict=True))
    arr[(1, *sl, slice(None))] = block
    ((key, expected),) = [(k, v.to_bytes()) for k, v in objects.items() if k != "zarr.json"]
    assert key == f"c/1/{shard[0]}/{shard[1]}/{shard[2]}/0"
    assert b"".join(encode_shard(block, corner, SHAPE, (16, 16, 16), (8, 8, 8))) == expected


def test_encode_shard_from_chunk_function_equals_block():
    block = np.random.default_rng(3).standard_normal((16, 12, 16, 2)).astype(np.float32)
    corner, shape = (16, 0, 16), (32, 12, 40)  # y is partial: edge chunks get padded

    def chunk_of(idx):
        return block[idx[0] * 8 : idx[0] * 8 + 8, idx[1] * 8 : idx[1] * 8 + 8, idx[2] * 8 : idx[2] * 8 + 8]

    expected = b"".join(encode_shard(block, corner, shape, (16, 16, 16), (8, 8, 8)))
    assert b"".join(encode_shard(chunk_of, corner, shape, (16, 16, 16), (8, 8, 8))) == expected
