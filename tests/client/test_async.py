"""AsyncLab against the real server: the same answers as Lab; and labelled point results (as_xarray=True)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from labclient import Lab, NotFoundError
from labclient.aio import AsyncLab

RNG = np.random.default_rng(3)
PTS = RNG.uniform(0, 2 * np.pi, size=(700, 3))


def test_async_lab_gives_what_lab_gives(server, big_token) -> None:
    with Lab(server.url, token=big_token) as lab:
        iso = lab.dataset("periodic16")
        want_u = iso.points("velocity", PTS, time=0.25, spatial="lag6")
        want_series = iso.points("pressure", PTS[:50], times=(0.0, 0.4, 0.1))
        want_paths = iso.track(PTS[:20], 0.0, 0.2, 0.02)
        want_cut = iso.cutout("velocity", 0.1, x=(0, 8), y=(2, 6), z=(0, 16, 4))
        names = [d["id"] for d in lab.datasets()]

    async def run() -> tuple:
        async with AsyncLab(server.url) as public:  # public limits: 256 points a request, concurrent batches
            ds = await public.dataset("periodic16")
            assert ds.limits["points_per_request"] == 256
            u, series, paths = await asyncio.gather(
                ds.points("velocity", PTS, time=0.25, spatial="lag6"),
                ds.points("pressure", PTS[:50], times=(0.0, 0.4, 0.1)),
                ds.track(PTS[:20], 0.0, 0.2, 0.02),
            )
            with pytest.raises(NotFoundError):
                await public.dataset("no-such-dataset")
            listed = [d["id"] for d in await public.datasets()]
            health = await public.health()
        async with AsyncLab(server.url, token=big_token) as lab:
            cut = await (await lab.dataset("periodic16")).cutout(
                "velocity", 0.1, x=(0, 8), y=(2, 6), z=(0, 16, 4)
            )
        return u, series, paths, cut, listed, health

    u, series, paths, cut, listed, health = asyncio.run(run())
    np.testing.assert_array_equal(u, want_u)
    np.testing.assert_array_equal(series, want_series)
    np.testing.assert_array_equal(paths, want_paths)
    np.testing.assert_array_equal(cut["velocity"].values, want_cut["velocity"].values)
    assert listed == names and health


def test_points_as_xarray_are_labelled(server, big_token) -> None:
    with Lab(server.url, token=big_token) as lab:
        iso = lab.dataset("periodic16")
        plain = iso.points("velocity", PTS[:10], time=0.2)
        one = iso.points("velocity", PTS[:10], time=0.2, as_xarray=True)
        series = iso.points("pressure", PTS[:10], times=(0.0, 0.4, 0.1), as_xarray=True)
        grad = iso.points("velocity", PTS[:4], time=0.2, operator="gradient", as_xarray=True)
    assert one.dims == ("time", "point", "component")
    assert one.shape == (1, 10, 3) and list(one["component"].values) == ["ux", "uy", "uz"]
    assert float(one["time"][0]) == 0.2
    np.testing.assert_array_equal(one["x"].values, PTS[:10, 0])
    np.testing.assert_array_equal(one.isel(time=0).values, plain)
    np.testing.assert_array_equal(one.sel(component="uy").isel(time=0).values, plain[:, 1])
    assert series.shape == (5, 10, 1)
    np.testing.assert_allclose(series["time"].values, [0.0, 0.1, 0.2, 0.3, 0.4])
    assert grad.shape == (1, 4, 9) and grad.attrs["operator"] == "gradient"
    assert str(grad["component"].values[1]) == "dux/dy"
