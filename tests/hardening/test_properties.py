"""Hypothesis-driven client tests against the real server, checked against in-process answers.

Random point sets (any size; the client splits them), random cutout ranges (wraps, negative starts, strides
larger than the grid), random halo searches. Each remote answer must equal the in-process one, and cutouts
and halo searches also a plain-numpy oracle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labclient.errors import LabClientError
from labservice import open_dataset
from labservice.datasets.simulation import Simulation
from labservice.errors import LabError
from labservice.http_errors import status_for

pytestmark = pytest.mark.slow

PROPERTY = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
TWO_PI = 2 * np.pi


@pytest.fixture(scope="module")
def local(demo_data: Path) -> Iterator[dict[str, Any]]:
    opened = {name: open_dataset(str(demo_data / name)) for name in ("isotropic64", "channel64")}
    yield opened
    for ds in opened.values():
        ds.close()


@pytest.fixture(scope="module")
def sim(demo_data: Path) -> Iterator[Simulation]:
    s = Simulation(demo_data / "cosmo64")
    yield s
    s.close()


# -- points ----------------------------------------------------------------------------------------
@PROPERTY
@given(
    n=st.one_of(st.integers(1, 300), st.integers(4097, 4400)),  # past 4096 the client splits the request
    seed=st.integers(0, 2**32 - 1),
    spatial=st.sampled_from(["none", "trilinear", "lag4", "m2q8", "fd4noint"]),
    operator=st.sampled_from(["field", "gradient"]),
    time=st.floats(6.0, 9.15),
    temporal=st.sampled_from(["none", "pchip"]),
)
def test_random_points_equal_in_process(lab, local, n, seed, spatial, operator, time, temporal) -> None:
    # Coordinates well outside the box: the periodic axes wrap them.
    pts = np.random.default_rng(seed).uniform(-TWO_PI, 2 * TWO_PI, (n, 3))
    args = dict(time=time, spatial=spatial, temporal=temporal, operator=operator)
    try:
        expected = local["isotropic64"].points("velocity", pts, **args)
    except LabError as exc:  # e.g. a method without derivatives: the server must refuse it the same way
        with pytest.raises(LabClientError) as refused:
            lab.dataset("isotropic64").points("velocity", pts, **args)
        assert refused.value.status == status_for(exc)  # the web layer's map
        return
    got = lab.dataset("isotropic64").points("velocity", pts, **args)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


# -- cutouts ---------------------------------------------------------------------------------------
def axis_range(n: int) -> st.SearchStrategy[tuple[int, int, int]]:
    """start, stop, step with wraps (start < 0 or stop > n) and steps up to twice the grid."""
    return st.tuples(st.integers(-n, n - 1), st.integers(1, n), st.integers(1, 2 * n)).map(
        lambda t: (t[0], t[0] + t[1], t[2])
    )


@pytest.fixture(scope="module")
def full_velocity(local) -> dict[str, np.ndarray]:
    """The whole stored field at two times, (z, y, x, c), for a plain-numpy oracle."""
    ds = local["isotropic64"]
    from labservice.cutout import read_cutout

    return {t: read_cutout(ds.reader, "velocity", k).data for k, t in ((0, 6.0), (20, 7.0))}


@PROPERTY
@given(x=axis_range(64), y=axis_range(64), z=axis_range(64), time=st.sampled_from([6.0, 7.0]))
def test_random_cutouts_equal_numpy_indexing(lab, full_velocity, x, y, z, time) -> None:
    cut = lab.dataset("isotropic64").cutout("velocity", time, x=x, y=y, z=z, as_numpy=True)
    zi, yi, xi = (np.arange(*r) % 64 for r in (z, y, x))  # periodic: indices wrap
    expected = full_velocity[time][np.ix_(zi, yi, xi)]
    assert cut["data"].shape == expected.shape
    np.testing.assert_array_equal(cut["data"], expected)
    np.testing.assert_array_equal(cut["x_index"], xi)


@PROPERTY
@given(y=st.tuples(st.integers(-20, 70), st.integers(1, 80), st.integers(1, 200)))
def test_channel_wall_axis_does_not_wrap(lab, local, y) -> None:
    """y is wall-bounded: a range inside it is served exactly, one past either wall is a 422, never a wrap."""
    start, stop, step = y[0], y[0] + y[1], y[2]
    ny = local["channel64"].meta.grid.y.size
    remote = lab.dataset("channel64")
    if start < 0 or stop > ny:
        with pytest.raises(LabClientError) as refused:
            remote.cutout(
                "velocity", 0.0 + local["channel64"].meta.times[0], y=(start, stop, step), x=(0, 2), z=(0, 2)
            )
        assert refused.value.status == 422
        return
    t0 = local["channel64"].meta.times[0]
    cut = remote.cutout("velocity", t0, x=(0, 2), y=(start, stop, step), z=(0, 2), as_numpy=True)
    from labservice.cutout import read_cutout

    expected = read_cutout(
        local["channel64"].reader, "velocity", 0, x=(0, 2), y=(start, stop, step), z=(0, 2)
    )
    np.testing.assert_array_equal(cut["data"], expected.data)


# -- halo searches ---------------------------------------------------------------------------------
def periodic_distance(xyz: np.ndarray, centre: np.ndarray, box: float) -> np.ndarray:
    d = np.abs(xyz - centre)
    d = np.minimum(d, box - d)
    return np.sqrt((d**2).sum(axis=1))


@PROPERTY
@given(
    snap=st.integers(20, 30),
    mass_quantile=st.floats(0.0, 0.95),
    centre=st.tuples(*[st.floats(0.0, 99.99)] * 3),
    radius=st.floats(1.0, 40.0),
    order=st.sampled_from(["mass", "-mass", "id", "-n_particles"]),
)
def test_random_halo_searches_equal_brute_force(lab, sim, snap, mass_quantile, centre, radius, order) -> None:
    everything = sim.search_halos(snap, limit=10_000).frame
    if everything.empty:
        return
    cut = float(np.quantile(everything["mass"], mass_quantile))
    got = lab.dataset("cosmo64").halos(
        snap, mass__gt=cut, near=(*centre, radius), order_by=order, limit=10_000
    )
    xyz = everything[["x", "y", "z"]].to_numpy()
    inside = (periodic_distance(xyz, np.array(centre), sim.box) <= radius) & (everything["mass"] > cut)
    assert set(got["id"]) == set(everything["id"][inside])
    expected = sim.search_halos(
        snap, {"mass__gt": cut}, near=(*centre, radius), order_by=order, limit=10_000
    ).frame
    assert list(got["id"]) == list(expected["id"])  # same order, ties included
