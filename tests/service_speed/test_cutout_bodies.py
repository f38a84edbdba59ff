"""Cutouts sent as views and mapped files, with a Content-Length: the same bytes as the streamed path."""

from __future__ import annotations

import io

import h5py
import httpx
import numpy as np
import pytest

from labservice.cutout.formats import decode_msgpack, open_cutout, stream_cutout
from labservice.cutout.layout import layout_for
from labservice.cutout.region import plan_cutout, read_cutout, time_index

FULL = {"variable": "velocity", "time": "0.1", "x": "0:64", "y": "0:64", "z": "0:64"}
WRAPPED = {"variable": "velocity", "time": "0.2", "x": "60:70", "y": "::2", "z": "5:40:3"}
SCALAR = {"variable": "pressure", "time": "0.4", "x": "3:50", "y": "7:9", "z": "0:64:5"}


def _layout(reader, q: dict[str, str]):
    plan = plan_cutout(reader.meta, q["variable"], q["x"], q["y"], q["z"])
    t = time_index(reader.meta, float(q["time"]))
    return plan, t, layout_for(reader, plan, t)


def _streamed(reader, q: dict[str, str], fmt: str) -> bytes:
    """The library's streamed encoding (z-slab by z-slab, one layer per block) joined."""
    return b"".join(stream_cutout(reader, _layout(reader, q)[2], fmt, max_bytes=1))


def _get(http: httpx.Client, token: str, q: dict[str, str], fmt: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"}
    r = http.get("/datasets/periodic64/cutout", params={**q, "format": fmt}, headers=auth)
    assert r.status_code == 200, r.text
    return r


@pytest.mark.parametrize("q", [FULL, WRAPPED, SCALAR], ids=["full", "wrapped", "scalar"])
@pytest.mark.parametrize("fmt", ["npy", "msgpack", "hdf5"])
def test_body_is_the_streamed_bytes_with_its_length(
    http: httpx.Client, bulk_token: str, reader, q: dict[str, str], fmt: str
) -> None:
    r = _get(http, bulk_token, q, fmt)
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.content == _streamed(reader, q, fmt)
    plan, t, _ = _layout(reader, q)
    expected = read_cutout(reader, plan, t).data
    if fmt == "npy":
        got = np.load(io.BytesIO(r.content))
    elif fmt == "msgpack":
        got = decode_msgpack(r.content)["data"]
    else:
        with h5py.File(io.BytesIO(r.content), "r") as f:
            got = f[q["variable"]][...]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("fmt", ["netcdf", "zarr", "zip", "xdmf"])
def test_other_formats_keep_their_content(http: httpx.Client, bulk_token: str, fmt: str) -> None:
    r = _get(http, bulk_token, WRAPPED, fmt)
    length = r.headers.get("content-length")
    if fmt == "xdmf":  # text of unknown length: chunked
        assert length is None and r.content.startswith(b"<?xml")
    else:
        assert int(length) == len(r.content) > 1000


@pytest.mark.parametrize("fmt", ["npy", "msgpack"])
def test_open_cutout_sends_views_of_the_blocks(reader, fmt: str) -> None:
    _, _, layout = _layout(reader, FULL)
    body = open_cutout(reader, layout, fmt, max_bytes=1)  # one z layer per block: many pieces
    try:
        rest = list(body.rest)
    finally:
        body.close()
    assert len(rest) > 1 and all(isinstance(p, memoryview) for p in rest)  # no copies
    joined = bytes(body.first) + b"".join(rest)
    assert body.length == len(joined)
    assert joined == _streamed(reader, FULL, fmt)


def test_open_cutout_maps_the_file_and_removes_it(reader, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    _, _, layout = _layout(reader, WRAPPED)
    body = open_cutout(reader, layout, "hdf5")
    assert isinstance(body.first, memoryview) and body.length == body.first.nbytes
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone; the mapping stays readable
    assert bytes(body.first) == _streamed(reader, WRAPPED, "hdf5")
    body.close()


def test_errors_before_the_first_byte_stay_json(http: httpx.Client, bulk_token: str) -> None:
    r = http.get(
        "/datasets/periodic64/cutout",
        params={**FULL, "variable": "pressure", "format": "npy", "x": "5:2"},
        headers={"Authorization": f"Bearer {bulk_token}"},
    )
    assert r.status_code == 422 and "detail" in r.json()


def test_labclient_cutout_is_a_writable_view(server, bulk_token: str, reader) -> None:
    from labclient import Lab

    plan, t, _ = _layout(reader, FULL)
    expected = read_cutout(reader, plan, t).data
    with Lab(server.url, token=bulk_token, retries=0) as lab:
        got = lab.dataset("periodic64").cutout("velocity", 0.1, (0, 64), (0, 64), (0, 64), as_numpy=True)
    np.testing.assert_array_equal(got["data"], expected)
    assert got["data"].flags.writeable and not got["data"].flags.owndata  # a view of the one read buffer
    np.testing.assert_array_equal(got["x"], plan.coords("x"))


def test_a_client_that_leaves_stops_the_reading(
    http: httpx.Client, bulk_token: str, reader, monkeypatch
) -> None:
    import time

    import labservice.routers.cutout as route

    pulled: list[int] = []
    closed: list[bool] = []

    def slow_open(reader, layout, fmt):
        body = open_cutout(reader, layout, fmt, max_bytes=1)  # 64 pieces, one per z layer
        inner = body.rest

        def pieces():
            try:
                for piece in inner:
                    time.sleep(0.01)
                    pulled.append(1)
                    yield piece
            finally:
                closed.append(True)

        body.rest = pieces()
        return body

    monkeypatch.setattr(route, "open_cutout", slow_open)
    params = {**FULL, "format": "npy"}
    auth = {"Authorization": f"Bearer {bulk_token}"}
    with http.stream("GET", "/datasets/periodic64/cutout", params=params, headers=auth) as r:
        assert r.status_code == 200
        next(r.iter_raw())
    deadline = time.monotonic() + 10
    while not closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed and len(pulled) < 64
    monkeypatch.undo()
    assert _get(http, bulk_token, FULL, "npy").content == _streamed(reader, FULL, "npy")  # serving goes on
