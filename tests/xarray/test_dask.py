"""Dask computations through the zarr view, as a public caller (default limits), against the local data."""

from __future__ import annotations

from collections.abc import Callable

import dask
import numpy as np
import pytest
import xarray as xr
import zarr


def test_subvolume_mean_equals_local(view_url: Callable[[str], str], served_data: dict[str, str]) -> None:
    ds = xr.open_zarr(view_url("isotropic64"))
    box = {"time": slice(10, 13), "z": slice(8, 40), "y": slice(20, 52), "x": slice(0, 64)}
    remote = ds["velocity"].isel(box).astype("f8").mean(dim=("time", "z", "y", "x"))
    assert remote.chunks is not None  # lazy until computed, by dask
    got = remote.compute().values
    local = zarr.open_array(f"{served_data['isotropic64']}/velocity", mode="r")
    want = local[10:13, 8:40, 20:52, 0:64, :].astype("f8").mean(axis=(0, 1, 2, 3))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert not np.allclose(want, 0.0)


def test_public_reads_full_variable_with_many_parallel_requests(
    view_url: Callable[[str], str], served_data: dict[str, str], stats: Callable[..., dict]
) -> None:
    # The public may run 4 requests at once; dask with 8 threads and zarr's own 10-way concurrency issue
    # more than that. zarr reads are counted in their own, wider bucket, so none is refused.
    before = stats("isotropic64")
    ds = xr.open_zarr(view_url("isotropic64"))
    with dask.config.set(scheduler="threads", num_workers=8):
        got = ds["velocity"].isel(time=slice(20, 24)).values
    local = zarr.open_array(f"{served_data['isotropic64']}/velocity", mode="r")
    assert np.array_equal(got, local[20:24])
    after = stats("isotropic64")
    assert after["you"]["caller"] == "public"
    # 4 shards x 8 inner chunks, each read with its shard's index
    assert after["data_requests"] - before["data_requests"] == 4 * 8 * 2
    assert after["you"]["bytes_served"] - before["you"]["bytes_served"] >= got.nbytes


def test_engine_retries_busy_answers(
    hostport: str, view_url: Callable[[str], str], new_token: Callable[..., str], served_data: dict[str, str]
) -> None:
    # One zarr read in flight at a time for this token: parallel reads get 429 + Retry-After. Stock
    # fsspec gives up; the engine's session waits and retries.
    from labclient import open_labservice

    token = new_token(max_concurrent=1, zarr_max_concurrent=1)
    box = {"time": 0, "z": slice(0, 8)}
    with dask.config.set(scheduler="threads", num_workers=8):
        # zarr alone opens a group with several requests at once (zarr.json, .zgroup, .zattrs, ...)
        with pytest.raises(Exception, match="429"):
            stock = xr.open_zarr(
                view_url("periodic16"),
                storage_options={"client_kwargs": {"headers": {"Authorization": f"Bearer {token}"}}},
            )
            stock["velocity"].isel(box).load()
        got = open_labservice(f"labservice://{hostport}/periodic16", token=token, chunks={})["velocity"]
        got = got.isel(box).values
    local = zarr.open_array(f"{served_data['periodic16']}/velocity", mode="r")
    assert np.array_equal(got, local[0, 0:8])
