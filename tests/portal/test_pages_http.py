"""Every portal page over plain HTTP: status, security headers, content, errors as pages, the HDF5 export."""

from __future__ import annotations

import io
import re
from html import unescape

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.dask  # the shared server runs jobs on a real Dask cluster

PAGES = [
    "/",
    "/jobs",
    "/datasets/isotropic64",
    "/datasets/channel64",
    "/datasets/cosmo64-density",
    "/datasets/cosmo64",
    "/datasets/cosmo64/halos/0",
    "/datasets/isotropic64/query",
    "/datasets/channel64/cutout",
]


def assert_secure(response) -> None:
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", PAGES)
def test_page_is_served_with_security_headers(http, path):
    r = http.get(path)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/html")
    assert_secure(r)
    # No inline script or style may be needed: the policy would block them.
    assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", r.text)
    assert " style=" not in r.text and "<style" not in r.text


@pytest.mark.parametrize("path", ["/static/js/common.js", "/static/portal.css"])
def test_static_files_carry_the_headers(http, path):
    r = http.get(path)
    assert r.status_code == 200 and len(r.content) > 500
    assert_secure(r)


def test_home_lists_every_dataset_with_a_quick_start(http):
    listed = {d["id"] for d in http.get("/api/v1/datasets").json()["datasets"]}
    html = unescape(http.get("/").text)
    cards = set(re.findall(r'class="card" data-dataset="([^"]+)"', html))
    assert cards == listed and "isotropic64" in cards
    assert 'lab.dataset("isotropic64")' in html  # the fully periodic box is the quick-start example
    assert 'href="/docs"' in html


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/datasets/isotropc64", "Did you mean &#39;isotropic64&#39;?"),
        ("/datasets/nothing-like-it/query", "unknown dataset &#39;nothing-like-it&#39;"),
        ("/datasets/cosmo64/cutout", "use its density field &#39;cosmo64-density&#39;"),
        ("/datasets/cosmo64/halos/99999999", "no halo with id 99999999"),
        ("/datasets/isotropic64/halos/3", "is a field dataset"),
    ],
)
def test_unknown_things_get_a_404_page_with_the_message(http, path, fragment):
    r = http.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert_secure(r)
    assert fragment in r.text
    assert "Traceback" not in r.text and 'id="error-message"' in r.text


def test_dataset_pages_show_spectrum_or_profile(http):
    iso = http.get("/datasets/isotropic64").text
    assert 'data-kind="spectrum" data-source="metadata"' in iso and 'id="spectrum-plot"' in iso
    channel = http.get("/datasets/channel64").text
    assert 'data-kind="profile" data-source="computed"' in channel and 'id="profile-plot"' in channel
    density = http.get("/datasets/cosmo64-density").text
    assert 'data-kind="spectrum" data-source="computed"' in density


def test_halo_page_plots_the_main_branch(http, demo_data):
    from labservice.datasets.simulation import Simulation

    sim = Simulation(demo_data / "cosmo64")
    try:
        top = int(sim.search_halos(30, {}, order_by=["-mass"], limit=1).frame["id"].iloc[0])
        branch = sim.tree(top, "main-branch")
    finally:
        sim.close()
    html = http.get(f"/datasets/cosmo64/halos/{top}").text
    points = re.search(r'id="mass-history"[^>]*data-points="(\d+)"', html)
    assert points is not None and int(points.group(1)) == len(branch) > 1
    assert html.count("<tr><td>") >= len(branch)


def test_points_table_exports_to_hdf5(http):
    table = {
        "dataset": "isotropic64",
        "variable": "velocity",
        "operator": "field",
        "spatial": "lag4",
        "temporal": "none",
        "time": 6.0,
        "components": ["ux", "uy", "uz"],
        "points": [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]],
        "values": [[1.5, -2.0, 0.25], [None, 3.0, 4.0]],
    }
    r = http.post("/export/points.h5", json=table)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-hdf5"
    assert 'filename="isotropic64_velocity_field_t6.h5"' in r.headers["content-disposition"]
    with h5py.File(io.BytesIO(r.content), "r") as f:
        np.testing.assert_array_equal(f["points"][:], table["points"])
        np.testing.assert_array_equal(f["values"][:], [[1.5, -2.0, 0.25], [np.nan, 3.0, 4.0]])
        assert [c.decode() if isinstance(c, bytes) else c for c in f["values"].attrs["components"]] == [
            "ux",
            "uy",
            "uz",
        ]
        assert f.attrs["dataset"] == "isotropic64" and f.attrs["time"] == 6.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"values": [[1.0, 2.0, 3.0]]}, "values must be 2 rows of 3 numbers"),
        ({"points": [[0.1, 0.2, 0.3], [1.0, 2.0]]}, "points must be N rows of [x, y, z]; row 1 has 2"),
        ({"colour": "red"}, "colour: is not a parameter"),
    ],
)
def test_bad_export_tables_are_422_with_a_message(http, change, message):
    table = {
        "dataset": "d",
        "variable": "v",
        "time": 0.0,
        "components": ["a", "b", "c"],
        "points": [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]],
        "values": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
    }
    r = http.post("/export/points.h5", json={**table, **change})
    assert r.status_code == 422
    assert message in r.json()["detail"]
