"""Requests per read with stock xarray, as the zarr view's docs tell users: default chunks make two
requests per inner chunk (index, chunk); chunks of the shard shape (``"auto"`` here) one per shard."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr
import zarr


@pytest.mark.parametrize(
    ("chunks", "per_shard"),
    [({}, 2 * 8), ("auto", 1), ({"time": 1, "z": 64, "y": 64, "x": 64}, 1)],
)
def test_requests_per_read(
    chunks: dict | str,
    per_shard: int,
    view_url: Callable[[str], str],
    new_token: Callable[..., str],
    stats: Callable[..., dict],
    served_data: dict[str, str],
) -> None:
    # isotropic64: one 64^3 shard per time, eight 32^3 inner chunks; three times = three shards
    token = new_token(max_cutout_bytes=1 << 30)
    opts = {"client_kwargs": {"headers": {"Authorization": f"Bearer {token}"}}}
    ds = xr.open_zarr(view_url("isotropic64"), storage_options=opts, chunks=chunks)
    before = stats("isotropic64", token)
    got = ds["velocity"].isel(time=slice(3, 6)).values
    after = stats("isotropic64", token)
    local = zarr.open_array(f"{served_data['isotropic64']}/velocity", mode="r")
    assert np.array_equal(got, local[3:6])
    assert after["data_requests"] - before["data_requests"] == 3 * per_shard
    assert after["you"]["bytes_served"] - before["you"]["bytes_served"] >= got.nbytes
