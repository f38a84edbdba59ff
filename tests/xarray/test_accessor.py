"""``ds.labservice``: point values from the server's own interpolation, without downloading chunks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr

from labclient import Lab
from labclient.errors import InvalidRequest


@pytest.fixture
def opened(hostport: str, new_token: Callable[..., str]) -> tuple[xr.Dataset, str]:
    token = new_token()
    return xr.open_dataset(f"labservice://{hostport}/isotropic64", engine="labservice", token=token), token


def test_points_are_the_servers_interpolation(
    opened: tuple[xr.Dataset, str], server, stats: Callable[..., dict]
) -> None:
    ds, token = opened
    rng = np.random.default_rng(7)
    pts = rng.uniform(0, 2 * np.pi, size=(50, 3))
    got = ds.labservice.points("velocity", pts, time=6.5, spatial="lag4")
    with Lab(server.url, token=token) as lab:
        want = lab.dataset("isotropic64").points("velocity", pts, time=6.5, spatial="lag4")
    assert got.dims == ("points", "velocity_component")
    assert list(got["velocity_component"].values) == ["ux", "uy", "uz"]
    assert np.array_equal(got.values, want)
    assert np.array_equal(got["x"].values, pts[:, 0]) and float(got["time"]) == 6.5
    # answered by /points: this caller fetched no chunk through the zarr view
    assert stats("isotropic64", token)["you"]["recent_reads"] == []
    assert ds.labservice.remote.lab.transport.client.headers["authorization"] == f"Bearer {token}"


def test_sel_points_at_grid_nodes_match_the_stored_values(opened: tuple[xr.Dataset, str]) -> None:
    ds, _ = opened
    x = ds["x"].values[[3, 10, 40]]
    y, z = ds["y"].values[5], ds["z"].values[60]
    got = ds.labservice.sel_points("velocity", x=x, y=y, z=z, time=7.0)
    assert got.dims == ("points", "velocity_component") and got.sizes["points"] == 3
    assert np.array_equal(got["y"].values, np.full(3, y))
    stored = ds["velocity"].sel(time=7.0, y=y, z=z).isel(x=[3, 10, 40]).values
    np.testing.assert_allclose(got.values, stored, rtol=0, atol=1e-5)


def test_gradient_and_series(opened: tuple[xr.Dataset, str]) -> None:
    ds, _ = opened
    pts = [[1.0, 2.0, 3.0], [0.5, 0.25, 6.0]]
    grad = ds.labservice.points("velocity", pts, time=6.5, operator="gradient", spatial="fd4lag4")
    assert grad.dims == ("points", "gradient_component") and grad.shape == (2, 9)
    assert grad["gradient_component"].values[1] == "dux/dy"
    raw = ds.labservice.remote.points("velocity", pts, time=6.5, operator="gradient", spatial="fd4lag4")
    assert np.array_equal(grad.values, np.asarray(raw).reshape(2, 9))
    series = ds.labservice.points("pressure", pts, times=(6.0, 6.1, 0.05))
    assert series.dims == ("time", "points", "pressure_component") and series.shape == (3, 2, 1)
    np.testing.assert_allclose(series["time"].values, [6.0, 6.05, 6.1])


def test_stock_open_zarr_needs_connect(view_url: Callable[[str], str], server) -> None:
    ds = xr.open_zarr(view_url("periodic16"))
    with pytest.raises(InvalidRequest, match="connect"):
        ds.labservice.sel_points("pressure", x=0.1, y=0.2, z=0.3, time=0.1)
    ds.labservice.connect(server.url)
    got = ds.labservice.sel_points("pressure", x=0.0, y=0.0, z=0.0, time=0.1)
    np.testing.assert_allclose(got.values, ds["pressure"].isel(time=1, x=[0], y=0, z=0).values, atol=1e-5)
    with pytest.raises(InvalidRequest, match="pressure"):
        ds.labservice.sel_points(x=0.1, y=0.2, z=0.3, time=0.1)  # two variables: say which


def test_import_labclient_does_not_need_xarray() -> None:
    code = "import sys, labclient; assert 'xarray' not in sys.modules and 'zarr' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    import labclient

    assert labclient.xarray_backend.LabserviceAccessor is labclient.LabserviceAccessor
    assert hasattr(xr.Dataset(), "labservice")
