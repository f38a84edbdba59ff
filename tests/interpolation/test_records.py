"""Placement records: each point is placed once (in the sort) and the evaluation reads its stencil starts,
``u`` and wall flags back from a packed record, so the packing must hold over the whole supported range."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from labservice.errors import InvalidInput
from labservice.interpolation import kernels
from labservice.interpolation.engine import PointEvaluator
from labservice.interpolation.weights import METHODS, AxisArrays
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable


def _records(grid: Grid, method: str, points: np.ndarray):
    axes = AxisArrays.from_grid(grid).as_tuple()
    n = points.shape[0]
    keys, status, rec = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int8), np.empty((n, 4))
    table = np.zeros((3, max(a.size for a in (grid.x, grid.y, grid.z))), dtype=np.int64)
    code = METHODS[method].code
    bad = kernels.sort_keys_range(code, points, 0, n, *axes, table, keys, status, rec, rec.view(np.int64))
    start, u, per_axis = (np.empty((n, 3), dtype=t) for t in (np.int64, np.float64, np.int8))
    kernels.place_points(code, points, *axes, start, u, per_axis)
    return bad, rec, start, u, per_axis


@pytest.mark.parametrize("method", ["lag4", "lag8", "fd8noint", "m2q8", "fd4lag4"])
def test_records_unpack_to_the_full_placement_up_to_the_largest_axis(method):
    # a periodic x axis of the largest supported size (its seam gives the most negative starts), a
    # wall-bounded y (shifted stencils) and a short periodic z; no data is needed to place points
    big = Axis(size=kernels.MAX_AXIS_NODES, periodic=True, start=0.0, step=1.0)
    walls = Axis(size=40, periodic=False, start=-1.0, step=0.05)
    grid = Grid(x=big, y=walls, z=Axis(size=16, periodic=True, start=0.0, step=0.5))
    rng = np.random.default_rng(4)
    x = np.concatenate([[0.0, 0.25, 0.999, kernels.MAX_AXIS_NODES - 1.2, kernels.MAX_AXIS_NODES - 1e-7],
                        rng.uniform(0, kernels.MAX_AXIS_NODES, 995)])
    y = np.concatenate([[-1.0, -0.99, 0.95, 0.949], rng.uniform(-1.0, 0.95, 996)])
    pts = np.stack([x, y, rng.uniform(0, 8, 1000)], 1)
    bad, rec, start, u, per_axis = _records(grid, method, pts)
    assert bad == 0
    got = np.array([kernels.record_starts(rec.view(np.int64), q) for q in range(pts.shape[0])])
    np.testing.assert_array_equal(got, start)
    assert start[:, 0].min() < 0 and start[:, 0].max() > kernels.MAX_AXIS_NODES - 10  # both ends were hit
    shifted = np.signbit(rec[:, :3])
    if method == "fd4lag4":  # weighted from the coordinates themselves: records keep them
        np.testing.assert_array_equal(rec[:, :3], pts)
    else:
        np.testing.assert_array_equal(np.abs(rec[:, :3]), u)
        np.testing.assert_array_equal(shifted, per_axis == 1)
        assert shifted[:, 1].any() and not shifted[:, [0, 2]].any()


def test_axes_longer_than_a_record_can_hold_are_refused_with_the_limit():
    small = Axis(size=16, periodic=True, start=0.0, step=1.0)
    meta = DatasetMeta(id="long", title="long", times=[0.0], chunks=(16, 16, 16), shards=(16, 16, 16),
                       grid=Grid(x=Axis(size=kernels.MAX_AXIS_NODES + 1, periodic=True, start=0.0, step=1.0),
                                 y=small, z=small),
                       variables={"p": Variable(components=["p"])})
    with pytest.raises(InvalidInput, match=r"axis x has 2097136 nodes; point queries support axes of up to 2,097,135"):
        PointEvaluator(SimpleNamespace(meta=meta), "p", "lag4")
