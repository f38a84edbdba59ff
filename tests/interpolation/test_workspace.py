"""The pool of placement arrays: reuse, its bound, and no sharing between concurrent evaluations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from labservice.interpolation import workspace
from labservice.interpolation.engine import PARALLEL_MIN, PointEvaluator
from tests.plugin.grids import uniform_axis


@pytest.fixture(autouse=True)
def empty_pool():
    workspace.clear()
    yield
    workspace.clear()


def test_a_returned_workspace_is_reused_and_only_the_largest_are_kept():
    a = workspace.take(1000)
    workspace.give(a)
    assert workspace.take(800) is a  # room enough: the same memory again
    assert workspace.take(800) is not a  # taken already: a new one
    sets = [workspace.take(n) for n in (10, 5000, 300, 2000)]
    for w in sets:
        workspace.give(w)
    assert sorted(w.capacity for w in workspace._idle) == [2000, 5000][: workspace.KEEP]
    assert workspace.take(6000).capacity == 6000  # nothing idle is big enough


def test_concurrent_evaluations_never_share_pooled_arrays(make_dataset):
    def field(X, Y, Z, t=0.0):
        return np.stack([np.sin(X) * np.cos(Y), np.cos(2 * Z) + 0.1 * X, np.sin(Y + Z)], -1)

    ds = make_dataset((uniform_axis(32), uniform_axis(32), uniform_axis(32)), {"u": field}, dtype="float32",
                      chunks=(16, 16, 16))
    ev = PointEvaluator(ds.reader, "u", "lag4", 1)
    rng = np.random.default_rng(8)
    # both serial batches and batches big enough for the parallel kernels
    sets = [rng.uniform(0, 2 * np.pi, (n, 3)) for n in (3000, PARALLEL_MIN + 5000, 4000, PARALLEL_MIN + 1)] * 3
    alone = [ev(0, p).values.copy() for p in sets]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: ev(0, p).values, sets))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)
    assert 0 < len(workspace._idle) <= workspace.KEEP
