"""ZarrStore.write_shard writes exactly the bytes zarr's own write path (write_box) writes, in every case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from labservice.errors import InvalidInput
from labservice.storage import create_store, open_store, shard_writer
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable

# 20 x 12 x 9 with chunks (8, 8, 4) and shards (16, 8, 8): partial shards and edge chunks on every axis.
SHAPE = (20, 12, 9)


def _meta(ncomp: int, dtype: str) -> DatasetMeta:
    ax = [Axis(size=n, start=0.0, step=1.0) for n in SHAPE]
    return DatasetMeta(
        id="w", title="w", grid=Grid(x=ax[0], y=ax[1], z=ax[2]), times=[0.0, 1.0],
        variables={"f": Variable(components=[f"c{i}" for i in range(ncomp)], dtype=dtype)},
        chunks=(8, 8, 4), shards=(16, 8, 8),
    )  # fmt: skip


def _shards(meta: DatasetMeta):
    size = meta.array_shards("f")[1:4]
    grid = meta.grid.array_shape
    for sz in range(-(-grid[0] // size[0])):
        for sy in range(-(-grid[1] // size[1])):
            for sx in range(-(-grid[2] // size[2])):
                lo = (sz * size[0], sy * size[1], sx * size[2])
                hi = tuple(min(a + s, n) for a, s, n in zip(lo, size, grid, strict=True))
                yield (sz, sy, sx), lo, hi


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "f" / "c").rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("ncomp", "stored", "source", "transposed"),
    [(3, "float32", "float32", False), (3, "float32", "float64", True), (1, "float64", "float32", False),
     (5, "float32", "int16", False), (2, "float64", "float64", True)],
)  # fmt: skip
@pytest.mark.parametrize("batch", [4 << 20, 5000], ids=["one-batch", "batches"])
def test_same_bytes_as_zarr(tmp_path, monkeypatch, ncomp, stored, source, transposed, batch):
    monkeypatch.setattr(shard_writer, "BATCH_BYTES", batch)  # 5000 B: one to four chunks per batch
    meta = _meta(ncomp, stored)
    nx, ny, nz = SHAPE
    rng = np.random.default_rng(ncomp)
    values = (rng.standard_normal((2, nz, ny, nx, ncomp)) * 100).astype(source)
    if source.startswith("float"):
        values[0, :4, :8, :8, :] = np.nan  # one whole chunk of NaN: left out of the shard, as zarr does
        values[1, 0, 0, 0, 0] = np.nan  # one NaN value inside a stored chunk
    old = create_store(str(tmp_path / "old"), meta)
    new = create_store(str(tmp_path / "new"), meta)
    for t in range(2):
        for shard, lo, hi in _shards(meta):
            box = values[t, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            old.write_box("f", t, *lo, box.astype(stored))
            if transposed:  # a source in x, y, z order: views with reversed strides
                comps = [np.ascontiguousarray(box[..., c].T).T for c in range(ncomp)]
            else:
                comps = [box[..., c] for c in range(ncomp)]
            new.write_shard("f", t, shard, comps)
    assert _files(tmp_path / "new") == _files(tmp_path / "old")
    got = zarr.open_group(str(tmp_path / "new"), mode="r")["f"][:]
    np.testing.assert_array_equal(got, values.astype(stored))
    # Our own checksummed chunk reader accepts them too.
    chunks, _ = open_store(str(tmp_path / "new")).read_chunks("f", 1, [(0, 0, 0), (2, 1, 2)])
    np.testing.assert_array_equal(chunks[1], values[1, 8:9, 8:12, 16:20].astype(stored))


def test_a_shard_of_only_nan_is_removed(tmp_path):
    meta = _meta(1, "float32")
    store = create_store(str(tmp_path / "s"), meta)
    box = np.ones((8, 8, 16), dtype=np.float32)
    store.write_shard("f", 0, (0, 0, 0), [box])
    shard_file = tmp_path / "s" / "f" / "c" / "0" / "0" / "0" / "0" / "0"
    assert shard_file.exists()
    store.write_shard("f", 0, (0, 0, 0), [box * np.nan])
    assert not shard_file.exists()
    assert np.isnan(store.read_box("f", 0, slice(0, 8), slice(0, 8), slice(0, 16))).all()


def test_bad_boxes_are_refused(tmp_path):
    store = create_store(str(tmp_path / "s"), _meta(2, "float32"))
    good = np.zeros((8, 8, 16), dtype=np.float32)
    with pytest.raises(InvalidInput, match="has 2 components; got 1"):
        store.write_shard("f", 0, (0, 0, 0), [good])
    with pytest.raises(InvalidInput, match=r"shape \(8, 8, 16\)"):
        store.write_shard("f", 0, (0, 0, 0), [good, good[:4]])
    with pytest.raises(InvalidInput, match="shard index"):
        store.write_shard("f", 0, (5, 0, 0), [good, good])
