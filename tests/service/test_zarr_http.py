"""The virtual Zarr v3 endpoint, through a real uvicorn server and stock xarray/zarr/fsspec over HTTP."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import xarray as xr

from labservice import open_dataset
from labservice.devserver import ServerThread
from labservice.settings import Settings


@pytest.fixture
def zarr_url(server: ServerThread) -> str:
    return server.url + "/api/v1/datasets/periodic16/zarr/"


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _open(url: str, token: str, consolidated: bool | None = None) -> xr.Dataset:
    return xr.open_zarr(
        url, consolidated=consolidated,
        storage_options={"client_kwargs": {"headers": _headers(token)}},
    )


def test_open_zarr_slice_equals_store(zarr_url: str, big_token: str, settings: Settings) -> None:
    xds = _open(zarr_url, big_token)
    assert xds["velocity"].dims == ("time", "z", "y", "x", "velocity_component")
    assert xds["pressure"].dims == ("time", "z", "y", "x", "pressure_component")
    got = xds["velocity"].isel(time=2, z=slice(3, 11), y=slice(0, 16), x=slice(5, 9)).values
    local = open_dataset(settings.datasets["periodic16"])
    want = local.store.read_box("velocity", 2, slice(3, 11), slice(0, 16), slice(5, 9))
    assert got.dtype == want.dtype == np.float32
    assert np.array_equal(got, want)
    assert np.isfinite(got).all()
    p = xds["pressure"].isel(time=4).values
    assert np.array_equal(p, local.store.read_box("pressure", 4, slice(0, 16), slice(0, 16), slice(0, 16)))
    # coordinates are the metadata's
    meta = local.meta
    assert np.array_equal(xds["x"].values, meta.grid.x.coords())
    assert np.array_equal(xds["y"].values, meta.grid.y.coords())
    assert np.array_equal(xds["z"].values, meta.grid.z.coords())
    assert np.array_equal(xds["time"].values, np.asarray(meta.times))
    assert xds.attrs["id"] == "periodic16" and xds.attrs["title"] == meta.title


def test_wall_dataset_stretched_y(server: ServerThread, big_token: str, settings: Settings) -> None:
    xds = _open(server.url + "/api/v1/datasets/wall16/zarr/", big_token, consolidated=True)
    local = open_dataset(settings.datasets["wall16"])
    assert np.array_equal(xds["y"].values, local.meta.grid.y.coords())
    got = xds["velocity"].isel(time=1).values
    nz, ny, nx = local.meta.grid.array_shape
    want = local.store.read_box("velocity", 1, slice(0, nz), slice(0, ny), slice(0, nx))
    assert np.array_equal(got, want)


def test_ranges_etag_head(server: ServerThread, big_token: str) -> None:
    base = server.url + "/api/v1/datasets/periodic16/zarr/"
    with httpx.Client(base_url=base, headers=_headers(big_token), timeout=60) as c:
        full = c.get("velocity/c/0/0/0/0/0")
        assert full.status_code == 200
        size = len(full.content)
        assert size == int(full.headers["content-length"]) > 16**3 * 3 * 4
        part = c.get("velocity/c/0/0/0/0/0", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.content == full.content[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{size}"
        suffix = c.get("velocity/c/0/0/0/0/0", headers={"Range": "bytes=-100"})
        assert suffix.status_code == 206 and suffix.content == full.content[-100:]
        assert suffix.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
        open_end = c.get("velocity/c/0/0/0/0/0", headers={"Range": f"bytes={size - 5}-"})
        assert open_end.status_code == 206 and open_end.content == full.content[-5:]
        bad = c.get("velocity/c/0/0/0/0/0", headers={"Range": f"bytes={size}-{size + 10}"})
        assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{size}"
        head = c.head("velocity/c/0/0/0/0/0")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == size
        etag = full.headers["etag"]
        assert head.headers["etag"] == etag and "max-age" in full.headers["cache-control"]
        assert c.get("velocity/c/0/0/0/0/0", headers={"If-None-Match": etag}).status_code == 304
        assert c.get("velocity/c/0/0/0/0/0", headers={"If-None-Match": '"other"'}).status_code == 200
        doc = c.get("zarr.json")
        assert doc.status_code == 200 and json.loads(doc.content)["node_type"] == "group"
        assert c.get("zarr.json", headers={"If-None-Match": doc.headers["etag"]}).status_code == 304
        coord = c.get("x/c/0")
        assert np.array_equal(np.frombuffer(coord.content, "<f8"), 2 * np.pi / 16 * np.arange(16))


@pytest.mark.parametrize(
    "key",
    [
        "nothere.json",
        "velocity/c/9/0/0/0/0",  # time index past the end
        "velocity/c/0/0/0/0",  # too few indices
        "velocity/done/0/0.0.0",  # storage-internal markers are not part of the layout
        "x/c/1",
        "velocity/c/0/../../zarr.json",
        "..%2F..%2Fetc/passwd",
        "%2Fetc/passwd",
    ],
)
def test_missing_and_traversal_keys_404(server: ServerThread, big_token: str, key: str) -> None:
    # http.client sends the path as written (httpx would normalise the dot segments away)
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", "/api/v1/datasets/periodic16/zarr/" + key, headers=_headers(big_token))
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 404, (key, r.status, body)
    assert json.loads(body)


def test_unknown_dataset_404(server: ServerThread) -> None:
    r = httpx.get(server.url + "/api/v1/datasets/nosuch/zarr/zarr.json", timeout=60)
    assert r.status_code == 404


def test_byte_limit_and_query_token(server: ServerThread, big_token: str) -> None:
    url = server.url + "/api/v1/datasets/periodic16/zarr/velocity/c/0/0/0/0/0"
    # public limit in the test settings is 16 KiB; one whole shard is 48 KiB
    public = httpx.get(url, timeout=60)
    assert public.status_code == 413
    assert "limit" in public.text
    # a small range is fine for the public
    assert httpx.get(url, headers={"Range": "bytes=0-1023"}, timeout=60).status_code == 206
    # the same token as a query parameter lifts the limit
    via_query = httpx.get(url, params={"token": big_token}, timeout=60)
    assert via_query.status_code == 200 and len(via_query.content) > 16 << 10
    bad = httpx.get(url, params={"token": "lab_not_a_token"}, timeout=60)
    assert bad.status_code == 401


def test_open_without_consolidated_metadata(zarr_url: str, big_token: str, settings: Settings) -> None:
    # zarr lists the group through the HTML folder page instead of the inline consolidated metadata
    xds = _open(zarr_url, big_token, consolidated=False)
    assert set(xds.data_vars) == {"velocity", "pressure"}
    local = open_dataset(settings.datasets["periodic16"])
    got = xds["pressure"].isel(time=3, z=slice(8, 16)).values
    assert np.array_equal(got, local.store.read_box("pressure", 3, slice(8, 16), slice(0, 16), slice(0, 16)))


def test_public_slice_reads_only_inner_chunks(zarr_url: str, settings: Settings) -> None:
    # The public limit (16 KiB) is below one shard (48 KiB) but above one inner chunk (6 KiB): a small
    # slice only works because zarr fetches the shard index and the needed chunk by byte range.
    xds = xr.open_zarr(zarr_url)
    got = xds["velocity"].isel(time=0, z=slice(0, 4), y=slice(0, 4), x=slice(0, 4)).values
    local = open_dataset(settings.datasets["periodic16"])
    assert np.array_equal(got, local.store.read_box("velocity", 0, slice(0, 4), slice(0, 4), slice(0, 4)))


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-9", "bytes=0-9,20-29", "bytes=-", "bytes=9-2"])
def test_malformed_range_is_416_with_error_body(server: ServerThread, big_token: str, header: str) -> None:
    url = server.url + "/api/v1/datasets/periodic16/zarr/velocity/c/0/0/0/0/0"
    size = int(httpx.head(url, headers=_headers(big_token), timeout=60).headers["content-length"])
    r = httpx.get(url, headers={**_headers(big_token), "Range": header}, timeout=60)
    assert r.status_code == 416, r.text
    body = r.json()
    assert body["code"] == "range_not_satisfiable" and repr(header) in body["detail"]
    assert r.headers["content-range"] == f"bytes */{size}"
