"""Cutouts over HTTP in every format, checked against the analytic field; and the PNG quick look."""

from __future__ import annotations

import io
import zipfile

import h5py
import httpx
import msgpack
import numpy as np
import pytest

from labservice.devserver import _periodic_field

H = 2 * np.pi / 16


def _expected(xi: np.ndarray, yi: np.ndarray, zi: np.ndarray, t: float) -> np.ndarray:
    u, _ = _periodic_field(xi * H, yi * H, zi * H, t)
    return u  # (nz, ny, nx, 3)


QUERY = {"variable": "velocity", "time": "0.3", "x": "14:20:2", "y": "0:16:4", "z": "3:5"}


def _get(http: httpx.Client, token: str, fmt: str) -> httpx.Response:
    r = http.get(
        "/datasets/periodic16/cutout",
        params={**QUERY, "format": fmt},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    return r


def test_npy_cutout_wraps_and_strides(http: httpx.Client, big_token: str) -> None:
    r = _get(http, big_token, "npy")
    data = np.load(io.BytesIO(r.content))
    expected = _expected(np.array([14, 0, 2]), np.array([0, 4, 8, 12]), np.array([3, 4]), 0.3)
    assert data.shape == (2, 4, 3, 3)
    np.testing.assert_allclose(data, expected, atol=1e-6)
    assert 'filename="' in r.headers["content-disposition"]


def test_hdf5_cutout_has_dimension_scales(http: httpx.Client, big_token: str, tmp_path) -> None:
    r = _get(http, big_token, "hdf5")
    path = tmp_path / "c.h5"
    path.write_bytes(r.content)
    with h5py.File(path, "r") as f:
        (name,) = [k for k in f if isinstance(f[k], h5py.Dataset) and f[k].ndim >= 4]
        np.testing.assert_allclose(
            f["x"][:], np.array([14, 16, 18]) * H, atol=1e-12
        )  # wrapped x keeps increasing
        assert f[name].dims[0][0].name.endswith("z")
        np.testing.assert_allclose(
            f[name][...],
            _expected(np.array([14, 0, 2]), np.arange(0, 16, 4), np.array([3, 4]), 0.3),
            atol=1e-6,
        )


def test_xdmf_and_zip(http: httpx.Client, big_token: str) -> None:
    xmf = _get(http, big_token, "xdmf").text
    assert "<Xdmf" in xmf and ".h5" in xmf
    names = zipfile.ZipFile(io.BytesIO(_get(http, big_token, "zip").content)).namelist()
    assert any(n.endswith(".h5") for n in names) and any(n.endswith(".xmf") for n in names)


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_other_formats_are_files(http: httpx.Client, big_token: str, fmt: str) -> None:
    content = _get(http, big_token, fmt).content
    magic = {"netcdf": b"\x89HDF", "zarr": b"PK\x03\x04"}[fmt]
    assert content[:4] == magic


def test_msgpack_cutout(http: httpx.Client, big_token: str) -> None:
    out = msgpack.unpackb(_get(http, big_token, "msgpack").content, raw=False)
    data = np.frombuffer(out["data"]["data"], dtype=out["data"]["dtype"]).reshape(out["data"]["shape"])
    np.testing.assert_allclose(
        data, _expected(np.array([14, 0, 2]), np.arange(0, 16, 4), np.array([3, 4]), 0.3), atol=1e-6
    )
    assert out["attrs"]["dataset"] == "periodic16" and out["attrs"]["time"] == pytest.approx(0.3)


def test_slice_png(http: httpx.Client) -> None:
    r = http.get(
        "/datasets/wall16/slice.png",
        params={"variable": "velocity", "time": "0", "axis": "z", "component": "ux"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    bad = http.get(
        "/datasets/wall16/slice.png", params={"variable": "velocity", "time": "0", "component": "uw"}
    )
    assert bad.status_code == 422 and "ux" in bad.json()["detail"]
