"""The engine's block decomposition: dense (cached padded blocks) and sparse (bounding box) reads agree
bit for bit with a single-block evaluation, across block faces and the periodic seam."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.interpolation.blocks import HALO, BlockLayout
from labservice.interpolation.engine import PARALLEL_MIN, PointEvaluator
from tests.plugin.grids import TWO_PI, uniform_axis


def _field(X, Y, Z, t=0.0):
    return np.stack([np.sin(X) * np.cos(Y), np.cos(2 * Z) + 0.1 * X, np.sin(Y + Z)], -1)


@pytest.fixture
def velocity_set(make_dataset):
    return make_dataset((uniform_axis(32), uniform_axis(24), uniform_axis(16, periodic=False, length=1.5)),
                        {"u": _field}, dtype="float32", chunks=(8, 8, 8))


def _blocks_in_cache(reader) -> int:
    return sum(1 for k in reader.cache._items if "interpolation-block" in k)


@pytest.mark.parametrize("method,nder", [("lag4", 0), ("lag8", 0), ("lag6", 2), ("fd8noint", 1), ("m2q8", 1)])
def test_block_paths_agree_exactly_with_one_block(velocity_set, method, nder):
    ds = velocity_set
    rng = np.random.default_rng(11)
    spread = np.stack([rng.uniform(-3, 9, 3000), rng.uniform(0, TWO_PI, 3000), rng.uniform(0, 1.5, 3000)], 1)
    # block faces (multiples of 8 nodes), the periodic seam, and the walls
    h = TWO_PI / 32
    faces = np.array([[8 * h, 8 * TWO_PI / 24, 0.0], [0.0, 0.0, 1.5], [TWO_PI - 1e-13, 16 * TWO_PI / 24, 0.8],
                      [16 * h + 1e-9, TWO_PI, 0.1]])
    cluster = rng.uniform(0.5, 0.9, (50, 3))
    pts = np.concatenate([spread, faces, cluster])
    whole = PointEvaluator(ds.reader, "u", method, nder, block=1024)(0, pts)
    assert whole.values.shape == (pts.shape[0], 3, (1, 3, 6)[nder])
    small = PointEvaluator(ds.reader, "u", method, nder, block=8)
    assert small.layout.count == 4 * 3 * 2
    for subset in (pts, cluster):  # dense: padded blocks get cached; sparse: only bounding boxes
        ds.reader.cache.clear()
        got = small(0, subset)
        ref = PointEvaluator(ds.reader, "u", method, nder, block=1024)(0, subset)
        assert np.array_equal(got.values, ref.values)
        assert np.array_equal(got.clipped, ref.clipped)
    assert np.array_equal(small(0, pts).values, whole.values)


def test_dense_requests_cache_padded_blocks_and_sparse_ones_read_little(velocity_set):
    ds = velocity_set
    reader = ds.reader
    ev = PointEvaluator(reader, "u", "lag8", 0, block=8)  # lag8 stencils span most of a padded 8^3 block
    reader.cache.clear()
    reader.reset_stats()
    ev(0, np.random.default_rng(0).uniform(0.3, 0.5, (40, 3)))  # a small cluster
    assert _blocks_in_cache(reader) == 0
    assert reader.stats()["chunks_read"] <= 27
    spread = np.random.default_rng(1).uniform(0, 1, (20000, 3)) * [TWO_PI, TWO_PI, 1.5]
    ev(0, spread)
    cached = _blocks_in_cache(reader)
    assert cached >= 1
    reader.reset_stats()
    again = ev(0, spread)  # warm: every block comes from the cache, no chunk is touched
    assert reader.stats()["cache_hits"] + reader.stats()["chunks_read"] < cached
    assert np.array_equal(again.values, PointEvaluator(reader, "u", "lag8", 0, block=1024)(0, spread).values)


def test_padded_boxes_cover_every_stencil_and_stop_at_walls(velocity_set):
    lay = BlockLayout(velocity_set.meta, "u", 8)
    assert lay.edge.tolist() == [8, 8, 8] and lay.nblocks.tolist() == [4, 3, 2]
    lo, hi = lay.padded_box(0)
    assert lo.tolist() == [-HALO, -HALO, 0] and hi.tolist() == [8 + HALO, 8 + HALO, 8 + HALO]
    lo, hi = lay.padded_box(lay.count - 1)
    assert lo.tolist() == [24 - HALO, 16 - HALO, 8 - HALO] and hi.tolist() == [32 + HALO, 24 + HALO, 16]


@pytest.mark.parametrize("method,nder", [("lag4", 0), ("lag6", 1), ("lag8", 2), ("m2q8", 0)])
def test_parallel_and_serial_kernels_agree_bit_for_bit(velocity_set, method, nder):
    # a web request's few points take the serial kernels, a big batch the parallel ones: same numbers
    ev = PointEvaluator(velocity_set.reader, "u", method, nder)
    rng = np.random.default_rng(5)
    n = PARALLEL_MIN + 3000
    pts = np.stack([rng.uniform(-3, 9, n), rng.uniform(0, TWO_PI, n), rng.uniform(0, 1.5, n)], 1)
    whole = ev(0, pts)
    parts = np.concatenate([ev(0, pts[i : i + 4096]).values for i in range(0, n, 4096)])
    assert np.array_equal(whole.values, parts)
    assert whole.clipped.any() and np.array_equal(whole.clipped, np.concatenate(
        [ev(0, pts[i : i + 4096]).clipped for i in range(0, n, 4096)]))
