"""The ``labservice`` xarray engine: same lazy Dataset as stock ``xr.open_zarr``, URLs, tokens, errors."""

from __future__ import annotations

from collections.abc import Callable

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from labclient.errors import AuthError, InvalidRequest, NotFoundError
from labclient.xarray_backend import LabserviceBackendEntrypoint, parse_url
from labservice import open_dataset


def test_engine_equals_open_zarr(
    hostport: str, view_url: Callable[[str], str], served_data: dict[str, str]
) -> None:
    ds = xr.open_dataset(f"labservice://{hostport}/periodic16", engine="labservice", chunks={})
    ref = xr.open_zarr(view_url("periodic16"))
    assert isinstance(ds["velocity"].data, da.Array)
    assert ds["velocity"].chunks == ref["velocity"].chunks
    assert ds.attrs.pop("labservice_server") == f"http://{hostport}"
    assert ds.attrs.pop("labservice_dataset") == "periodic16"
    assert "labservice_token_id" not in ds.attrs  # public
    xr.testing.assert_identical(ds, ref)  # coords, attrs, dims, every value
    local = open_dataset(served_data["periodic16"])
    got = ds["velocity"].isel(time=1, z=slice(2, 9), x=slice(5, 16)).values
    assert np.array_equal(got, local.store.read_box("velocity", 1, slice(2, 9), slice(0, 16), slice(5, 16)))


def test_engine_without_chunks_is_lazy(
    hostport: str, new_token: Callable[..., str], stats: Callable[..., dict], served_data: dict[str, str]
) -> None:
    token = new_token()
    ds = xr.open_dataset(f"labservice://{hostport}/periodic16", engine="labservice", token=token)
    assert ds["velocity"].chunks is None
    assert stats("periodic16", token)["you"]["recent_reads"] == []  # opening read no data
    got = ds["velocity"].isel(time=4, y=slice(3, 5)).values
    local = open_dataset(served_data["periodic16"])
    assert np.array_equal(got, local.store.read_box("velocity", 4, slice(0, 16), slice(3, 5), slice(0, 16)))


def test_open_labservice_is_dask_backed(hostport: str, view_url: Callable[[str], str]) -> None:
    from labclient import open_labservice

    ds = open_labservice(f"labservice://{hostport}/wall16")
    ref = xr.open_zarr(view_url("wall16"), chunks="auto")
    assert ds["velocity"].chunks == ref["velocity"].chunks
    xr.testing.assert_identical(ds.drop_attrs(deep=False), ref.drop_attrs(deep=False))


def test_engine_is_registered_and_guesses_its_urls() -> None:
    engines = xr.backends.list_engines()
    assert isinstance(engines["labservice"], LabserviceBackendEntrypoint)
    guess = LabserviceBackendEntrypoint().guess_can_open
    assert guess("labservice://127.0.0.1:8000/isotropic64")
    assert guess("labservice+https://lab.example.org/isotropic64")
    assert not guess("http://127.0.0.1:8000/api/v1/datasets/isotropic64/zarr/")
    assert not guess("/data/isotropic64.zarr")
    assert not guess(b"labservice://x/y")


@pytest.mark.parametrize(
    ("url", "https", "want"),
    [
        ("labservice://127.0.0.1:8000/isotropic64", None, ("http://127.0.0.1:8000", "isotropic64")),
        ("labservice+http://h:1/iso/", None, ("http://h:1", "iso")),
        ("labservice+https://lab.example.org/iso", None, ("https://lab.example.org", "iso")),
        ("labservice://lab.example.org/iso", True, ("https://lab.example.org", "iso")),
        ("labservice://proxy:80/lab/v2/iso", None, ("http://proxy:80/lab/v2", "iso")),
    ],
)
def test_parse_url(url: str, https: bool | None, want: tuple[str, str]) -> None:
    assert parse_url(url, https) == want


@pytest.mark.parametrize("url", ["http://h:1/iso", "labservice://h:1/", "labservice:///iso", "iso"])
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(InvalidRequest, match="labservice"):
        parse_url(url)


@pytest.mark.parametrize("way", ["kwarg", "backend_kwargs", "storage_options", "env"])
def test_token_travels_with_every_read(
    way: str,
    hostport: str,
    new_token: Callable[..., str],
    stats: Callable[..., dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = new_token()
    url = f"labservice://{hostport}/periodic16"
    if way == "kwarg":
        ds = xr.open_dataset(url, engine="labservice", token=token)
    elif way == "backend_kwargs":
        ds = xr.open_dataset(url, engine="labservice", backend_kwargs={"token": token})
    elif way == "storage_options":
        ds = xr.open_dataset(url, engine="labservice", storage_options={"token": token})
    else:
        monkeypatch.setenv("LABSERVICE_TOKEN", token)
        ds = xr.open_dataset(url, engine="labservice")
    assert ds["pressure"].isel(time=0, z=slice(0, 4)).values.shape == (4, 16, 16, 1)
    assert ds.attrs["labservice_token_id"] == token.split("_")[1]
    assert not any(token in str(v) for v in ds.attrs.values())  # never the secret
    mine = stats("periodic16", token)["you"]
    assert mine["caller"] == "xarray-test"
    assert mine["bytes_served"] > 0 and mine["recent_reads"], "the data reads did not carry the token"
    assert all(r["key"].startswith("pressure/c/0/") for r in mine["recent_reads"])


def test_token_limits_apply_through_the_engine(hostport: str, new_token: Callable[..., str]) -> None:
    # A whole periodic16 shard is 48 KiB; this token may read 16 KiB per request, so a full time step
    # (one whole-shard read) is refused while a small slice (single inner chunks) is fine.
    ds = xr.open_dataset(
        f"labservice://{hostport}/periodic16", engine="labservice", token=new_token(max_cutout_bytes=16 << 10)
    )
    assert ds["velocity"].isel(time=0, z=slice(0, 2), y=slice(0, 2), x=slice(0, 2)).values.shape == (
        2,
        2,
        2,
        3,
    )
    with pytest.raises(Exception, match="413|Payload Too Large|Content Too Large"):
        ds["velocity"].isel(time=0).load()


def test_bad_token_and_unknown_dataset_explained(hostport: str) -> None:
    with pytest.raises(AuthError, match="not valid"):
        xr.open_dataset(f"labservice://{hostport}/periodic16", engine="labservice", token="lab_bad_token")
    with pytest.raises(NotFoundError, match="periodic16"):
        xr.open_dataset(f"labservice://{hostport}/periodic61", engine="labservice")
