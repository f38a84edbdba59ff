"""The Morton index of halo centres: near= and box= searches equal brute force, periodic wrap included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labservice.datasets.haloindex import HaloIndex
from labservice.datasets.simulation import Simulation

BOX = 100.0


def _shifts(box: float) -> np.ndarray:
    # Queries may start more than a box length from the origin (lo up to 1.5 boxes): two images each way.
    return np.array(list(itertools.product(np.arange(-2, 3) * box, repeat=3)))


def _brute_near(centres: np.ndarray, c: np.ndarray, r: float, box: float = BOX) -> np.ndarray:
    # The nearest of the periodic images, with no modulo trick shared with the code under test.
    d = np.linalg.norm(centres[:, None, :] + _shifts(box)[None] - np.mod(c, box), axis=2).min(axis=1)
    return np.flatnonzero(d <= r)


def _brute_box(centres: np.ndarray, lo: np.ndarray, hi: np.ndarray, box: float = BOX) -> np.ndarray:
    inside = np.zeros(len(centres), dtype=bool)
    for shift in _shifts(box):
        p = centres + shift
        inside |= np.all((p >= lo) & (p < hi), axis=1)
    return np.flatnonzero(inside)


@pytest.fixture(scope="module")
def clustered():
    """600 halos in 3 snapshots, half of them in clumps that straddle the box corner."""
    rng = np.random.default_rng(3)
    clumps = np.mod(rng.normal(0.0, 3.0, (300, 3)) + rng.choice([0.0, 99.0, 50.0], (300, 1)), BOX)
    centres = np.concatenate([rng.uniform(0, BOX, (300, 3)), clumps])
    snap = rng.integers(0, 3, len(centres))
    return snap, centres, HaloIndex(snap, centres, BOX)


coord = st.floats(-20.0, 120.0, allow_nan=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=coord, y=coord, z=coord, r=st.floats(0.01, 50.0), snap=st.integers(0, 2))
def test_sphere_candidates_hold_every_match(clustered, x, y, z, r, snap):
    snaps, centres, index = clustered
    rows = index.sphere_rows(snap, np.array([x, y, z]), r)
    assert np.all(np.diff(rows) > 0) and np.all(snaps[rows] == snap)
    mine = np.flatnonzero(snaps == snap)
    want = mine[_brute_near(centres[mine], np.array([x, y, z]), r)]
    assert set(want) <= set(rows)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lo=st.tuples(coord, coord, coord), size=st.tuples(*[st.floats(0.01, BOX)] * 3), snap=st.integers(0, 2))
def test_box_candidates_hold_every_match(clustered, lo, size, snap):
    snaps, centres, index = clustered
    lo, hi = np.array(lo), np.array(lo) + np.array(size)
    rows = index.box_rows(snap, lo, hi)
    mine = np.flatnonzero(snaps == snap)
    assert set(mine[_brute_box(centres[mine], lo, hi)]) <= set(rows)


def test_small_spheres_examine_few_rows(clustered):
    snaps, centres, index = clustered
    rows = index.sphere_rows(0, np.array([50.0, 50.0, 50.0]), 5.0)
    assert len(rows) < 0.2 * np.count_nonzero(snaps == 0)


@pytest.fixture(scope="module")
def sim(small_sim):
    s = Simulation(small_sim)
    yield s
    s.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    x=st.floats(-10, 60),
    y=st.floats(-10, 60),
    z=st.floats(-10, 60),
    r=st.floats(0.5, 25.0),
    mass=st.sampled_from([0.0, 3e12, 1e13]),
)
def test_search_halos_near_equals_brute_force(sim, x, y, z, r, mass):
    last = max(sim._rows)
    page = sim.search_halos(last, {"mass__gt": mass}, near=(x, y, z, r), limit=10_000)
    cat = sim.halos[sim.halos["snap"] == last]
    c = cat[["x", "y", "z"]].to_numpy()
    want = cat.iloc[_brute_near(c, np.array([x, y, z]), r, sim.box)]
    want = want[want["mass"] > mass]
    assert page.frame["id"].tolist() == want["id"].tolist()
    assert page.total == len(want) and page.examined <= len(cat)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lo=st.tuples(*[st.floats(-25, 75)] * 3), size=st.tuples(*[st.floats(0.5, 50.0)] * 3))
def test_search_halos_box_equals_brute_force(sim, lo, size):
    last = max(sim._rows)
    lo, hi = np.array(lo), np.array(lo) + np.array(size)
    page = sim.search_halos(last, box=(*lo, *hi), limit=10_000)
    cat = sim.halos[sim.halos["snap"] == last]
    want = cat.iloc[_brute_box(cat[["x", "y", "z"]].to_numpy(), lo, hi, sim.box)]
    assert page.frame["id"].tolist() == want["id"].tolist()
