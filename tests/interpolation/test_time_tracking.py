"""Temporal interpolation (pchip closed form, one spatial pass per stored step) and particle tracking."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.errors import InvalidInput, OutOfDomain
from labservice.interpolation.temporal import time_weights
from tests.plugin.grids import uniform_axis

TIMES = [0.0, 0.4, 1.0, 1.3, 2.0, 2.8]


def wave(X, Y, Z, t):
    return np.stack([np.sin(X + t) * np.cos(Y), np.cos(Z - 2 * t)], -1)


def hermite(t, ts, fs):
    """The reference closed form on [t1, t2] with centred slopes (one-sided at the ends)."""
    i = np.searchsorted(ts, t) - 1
    t1, t2, f1, f2 = ts[i], ts[i + 1], fs[i], fs[i + 1]
    s12 = (f2 - f1) / (t2 - t1)
    d1 = (s12 + (f1 - fs[i - 1]) / (t1 - ts[i - 1])) / 2 if i >= 1 else s12
    d2 = ((fs[i + 2] - f2) / (ts[i + 2] - t2) + s12) / 2 if i + 2 < len(ts) else s12
    h = t2 - t1
    s = (t - t1) / h
    return ((2 * s**3 - 3 * s**2 + 1) * f1 + (s**3 - 2 * s**2 + s) * h * d1 + (-2 * s**3 + 3 * s**2) * f2
            + (s**3 - s**2) * h * d2)


@pytest.fixture(scope="module")
def wave_set(tmp_path_factory):
    from labservice.facade import Dataset
    from labservice.storage import ChunkCache, ChunkReader, create_store
    from labservice.storage.metadata import DatasetMeta, Grid, Variable

    ax = uniform_axis(16)
    meta = DatasetMeta(id="wave", title="wave", grid=Grid(x=ax, y=ax, z=ax), times=TIMES,
                       variables={"u": Variable(components=["a", "b"], dtype="float64")}, chunks=(8, 8, 8),
                       shards=(16, 16, 16))
    store = create_store(str(tmp_path_factory.mktemp("wave") / "w.zarr"), meta)
    c = ax.coords()
    Z, Y, X = np.meshgrid(c, c, c, indexing="ij")
    for k, t in enumerate(TIMES):
        store.write_box("u", k, 0, 0, 0, wave(X, Y, Z, t))
    return Dataset(store, ChunkReader(store, cache=ChunkCache(1 << 26)))


def test_pchip_equals_the_closed_form_hermite(wave_set):
    pts = np.random.default_rng(0).uniform(0, 6.28, (50, 3))
    qt = np.array([0.1, 0.4, 0.7, 1.15, 1.6, 2.5, 2.8])
    at_nodes = np.stack([wave_set.points("u", pts, time=t, spatial="lag6") for t in TIMES])
    for t in qt:
        got = wave_set.points("u", pts, time=t, spatial="lag6", temporal="pchip")
        assert np.allclose(got, hermite(t, np.array(TIMES), at_nodes), rtol=0, atol=1e-12)


def test_linear_and_none_weights():
    assert time_weights(TIMES, 0.55, "linear") == pytest.approx({1: 0.75, 2: 0.25})
    assert time_weights(TIMES, 0.69, "none") == {1: 1.0}
    assert time_weights(TIMES, 0.71, "none") == {2: 1.0}
    assert time_weights(TIMES, 1.3, "pchip") == {3: 1.0}
    w = time_weights(TIMES, 1.1, "pchip")
    assert sorted(w) == [1, 2, 3, 4] and sum(w.values()) == pytest.approx(1.0, abs=1e-14)


class CountingReader:
    """Wraps the real ChunkReader to count the stored steps each query touches."""

    cache = None  # no block cache: every read goes through region() and is counted

    def __init__(self, reader):
        self.reader = reader
        self.store = reader.store
        self.steps = []

    @property
    def meta(self):
        return self.reader.meta

    def region(self, variable, t, lo, hi):
        self.steps.append(t)
        return self.reader.region(variable, t, lo, hi)

    def close(self):
        self.reader.close()


def test_series_interpolates_each_stored_step_once(wave_set):
    from labservice.facade import Dataset

    counting = CountingReader(wave_set.reader)
    ds = Dataset(wave_set.store, counting)
    pts = np.array([[0.5, 1.0, 2.0], [3.0, 3.1, 0.2]])  # both in the same chunk group
    r = ds.query_points("u", pts, times=(0.5, 1.9, 0.05), spatial="lag4", temporal="pchip")
    assert r.series and r.values.shape == (29, 2, 2)
    assert sorted(counting.steps) == sorted(set(counting.steps)) == [0, 1, 2, 3, 4, 5]
    for j, t in enumerate(r.times):
        one = wave_set.points("u", pts, time=t, spatial="lag4", temporal="pchip")
        assert np.allclose(r.values[j], one, rtol=0, atol=1e-13)
    # and it tracks the analytic time signal
    exact = np.stack([wave(*pts.T, t) for t in r.times])
    assert np.abs(r.values - exact).max() < 0.1  # coarse stored steps (0.3 to 0.8) of a frequency-2 signal


def test_time_errors(wave_set):
    with pytest.raises(OutOfDomain, match=r"time must be in \[0, 2.8\]"):
        wave_set.points("u", [[0, 0, 0]], time=3.0)
    with pytest.raises(InvalidInput, match="Did you mean 'pchip'"):
        wave_set.points("u", [[0, 0, 0]], time=1.0, temporal="pchp")
    with pytest.raises(InvalidInput, match="give a time"):
        wave_set.points("u", [[0, 0, 0]])


def rotation(X, Y, Z, t=0.0):
    """Solid-body rotation about (0.5, 0.5) with unit angular velocity."""
    return np.stack([-(Y - 0.5), X - 0.5, 0.0 * Z], -1)


@pytest.mark.parametrize("scheme,order", [("rk2", 2), ("rk4", 4)])
def test_tracking_converges_at_its_order_in_solid_body_rotation(make_dataset, scheme, order):
    box = uniform_axis(12, periodic=False, length=1.0)
    ds = make_dataset((box, box, box), {"velocity": rotation}, times=(0.0, 1.0, 2.0))
    p0 = np.array([[0.8, 0.5, 0.3], [0.5, 0.25, 0.7], [0.6, 0.6, 0.5]])
    T = 1.5
    r = p0[:, :2] - 0.5
    exact = np.stack([0.5 + r[:, 0] * np.cos(T) - r[:, 1] * np.sin(T), 0.5 + r[:, 0] * np.sin(T) + r[:, 1] * np.cos(T),
                      p0[:, 2]], 1)
    errors = []
    for dt in (0.1, 0.05, 0.025):
        res = ds.track(p0, 0.0, T, dt, scheme=scheme, spatial="lag4", temporal="linear")
        assert not res.left_domain.any()
        errors.append(np.abs(res.positions - exact).max())
    measured = np.log2(errors[0] / errors[1]), np.log2(errors[1] / errors[2])
    assert all(abs(m - order) <= 0.3 for m in measured), (errors, measured)


def test_particles_leaving_a_wall_stop_and_are_flagged(make_dataset):
    box = uniform_axis(10, periodic=False, length=1.0)

    def drift(X, Y, Z, t=0.0):
        return np.stack([0 * X + 1.0, 0 * Y, 0 * Z], -1)

    ds = make_dataset((uniform_axis(10), box, box), {"velocity": drift}, times=(0.0, 1.0))
    p0 = np.array([[6.0, 0.5, 0.5], [0.1, 0.5, 0.5]])
    res = ds.track(p0, 0.0, 1.0, 0.1, every=0.5)
    assert not res.left_domain.any()  # x is periodic: particles wrap, positions stay continuous
    assert np.allclose(res.positions[:, 0], p0[:, 0] + 1.0)
    assert res.trajectory.shape == (3, 2, 3) and np.allclose(res.times, [0, 0.5, 1.0])

    def updrift(X, Y, Z, t=0.0):
        return np.stack([0 * X, 0 * Y + 1.0, 0 * Z], -1)

    ds = make_dataset((uniform_axis(10), box, box), {"velocity": updrift}, times=(0.0, 1.0))
    res = ds.track(np.array([[1.0, 0.75, 0.5], [1.0, 0.05, 0.5]]), 0.0, 1.0, 0.1, scheme="rk4")
    assert res.left_domain.tolist() == [True, True]
    assert res.positions[0, 1] <= 1.0 and res.stop_time[0] == pytest.approx(0.2)
    assert res.stop_time[1] == pytest.approx(0.9)
