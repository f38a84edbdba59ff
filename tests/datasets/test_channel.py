"""channel64: the closed form is divergence-free and no-slip; stored values equal it at the nodes."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.datasets.demo.channel import (
    DEFAULT_PARAMS,
    channel_pressure,
    channel_velocity,
    channel_velocity_gradient,
    stretched_y,
    write_channel_run,
)
from labservice.datasets.ingest import ingest_descriptor
from labservice.storage import open_store


@pytest.fixture
def points():
    rng = np.random.default_rng(7)
    n = 400
    return rng.uniform(0, 2 * np.pi, n), rng.uniform(-1, 1, n), rng.uniform(0, np.pi, n), rng.uniform(0, 2, n)


def test_divergence_free_by_finite_differences(points):
    x, y, z, t = points
    h = 1e-4  # fine resolution: 4th-order differences are accurate to ~1e-14 here

    def d(axis):
        shift = np.eye(3)[axis] * h

        def f(s):
            return channel_velocity(x + s * shift[0], y + s * shift[1], z + s * shift[2], t)[..., axis]

        return (8 * (f(1) - f(-1)) - (f(2) - f(-2))) / (12 * h)

    div = d(0) + d(1) + d(2)
    scale = np.abs(channel_velocity_gradient(x, y, z, t)).max()
    assert np.abs(div).max() < 1e-9 * scale
    assert scale > 0.5


def test_gradient_matches_finite_differences(points):
    x, y, z, t = points
    h = 1e-5
    grad = channel_velocity_gradient(x, y, z, t)
    for j, step in enumerate(np.eye(3) * h):
        fd = (
            channel_velocity(x + step[0], y + step[1], z + step[2], t)
            - channel_velocity(x - step[0], y - step[1], z - step[2], t)
        ) / (2 * h)
        np.testing.assert_allclose(grad[..., j], fd, rtol=0, atol=1e-8)


def test_no_slip_at_the_walls_and_poiseuille_mean(points):
    x, _, z, t = points
    for wall in (-1.0, 1.0):
        assert np.abs(channel_velocity(x, wall, z, t)).max() == 0.0
    # The modes average out over a period in x: the mean profile is Poiseuille.
    xs = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ys = np.array([-0.5, 0.0, 0.3])
    u = channel_velocity(
        xs[:, None, None], ys[None, :, None], np.linspace(0, np.pi, 32, endpoint=False)[None, None, :], 0.4
    )
    np.testing.assert_allclose(u[..., 0].mean(axis=(0, 2)), 1 - ys**2, atol=1e-12)


def test_field_varies_in_time_and_is_periodic(points):
    x, y, z, t = points
    assert np.abs(channel_velocity(x, y, z, t) - channel_velocity(x, y, z, t + 0.3)).max() > 1e-2
    np.testing.assert_allclose(
        channel_velocity(x + 2 * np.pi, y, z - np.pi, t), channel_velocity(x, y, z, t), atol=1e-12
    )
    np.testing.assert_allclose(
        channel_pressure(x + 2 * np.pi, y, z + np.pi, t), channel_pressure(x, y, z, t), atol=1e-12
    )


def test_stretched_y_clusters_at_the_walls():
    y = stretched_y(65)
    dy = np.diff(y)
    assert y[0] == -1.0 and y[-1] == 1.0 and np.all(dy > 0)
    assert dy[0] < dy[32] / 5
    np.testing.assert_allclose(y, -y[::-1], atol=1e-15)


def _check_store_against_formula(url: str) -> None:
    store = open_store(url)
    meta = store.meta
    params = meta.extra["params"]
    x, y, z = (meta.grid.axis(a).coords() for a in "xyz")
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    for ti in (0, len(meta.times) - 1):
        t = meta.times[ti]
        exact = channel_velocity(xx, yy, zz, t, params)
        got = store.read_box("velocity", ti, slice(None), slice(None), slice(None))
        assert got.dtype == np.float32
        # Equal to the formula to float32 rounding.
        np.testing.assert_allclose(got, exact, rtol=0, atol=np.finfo(np.float32).eps * np.abs(exact).max())
        p = store.read_box("pressure", ti, slice(None), slice(None), slice(None))[..., 0]
        np.testing.assert_allclose(p, channel_pressure(xx, yy, zz, t, params), rtol=0, atol=1e-8)
        assert np.abs(got[:, [0, -1], :, :]).max() == 0.0  # no slip on the wall nodes
    store.close()


def test_small_channel_through_ingest_equals_the_formula(tmp_path):
    gen = write_channel_run(tmp_path / "raw", "chan", "../chan", shape=(16, 17, 8), times=[0.0, 0.1, 0.25])
    descriptor = None
    try:
        while True:
            next(gen)
    except StopIteration as done:
        descriptor = done.value
    url = ingest_descriptor(descriptor, progress=False)
    meta = open_store(url).meta
    assert meta.grid.y.coordinates is not None and not meta.grid.y.periodic
    assert meta.grid.x.periodic and meta.grid.z.periodic
    assert meta.extra["params"] == DEFAULT_PARAMS and "curl" in meta.extra["formula"]
    _check_store_against_formula(url)


def test_built_channel64_equals_the_formula(demo_data):
    url = demo_data / "channel64"
    if not (url / "zarr.json").exists():
        pytest.skip(f"{url} not built (make test builds it)")
    meta = open_store(str(url)).meta
    assert meta.grid.shape == (64, 65, 64) and 16 <= len(meta.times) <= 32
    _check_store_against_formula(str(url))
