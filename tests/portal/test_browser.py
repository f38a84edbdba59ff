"""Drive the portal in headless Chromium as a person would, against a real server with jobs on Dask."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.plugin.portal import PUBLIC_POINTS, set_token

pytestmark = [pytest.mark.browser, pytest.mark.dask]


def image_bytes(tab, selector: str = "#slice-image") -> tuple[str, str]:
    """The image's URL once it has loaded, and its pixels as the browser drew them (a PNG data URL)."""
    tab.wait_for_function(
        "sel => { const i = document.querySelector(sel); "
        "return i.complete && i.naturalWidth > 0 && i.dataset.loading === 'false'; }",
        arg=selector,
    )
    pixels = tab.eval_on_selector(
        selector,
        "img => { const c = document.createElement('canvas'); c.width = img.naturalWidth; "
        "c.height = img.naturalHeight; c.getContext('2d').drawImage(img, 0, 0); return c.toDataURL(); }",
    )
    return tab.get_attribute(selector, "src"), pixels


def test_slice_viewer_follows_the_sliders(page):
    page.goto("/")
    page.click("article[data-dataset='isotropic64'] h3 a")
    page.wait_for_url("**/datasets/isotropic64")
    assert page.inner_text("h1") == "isotropic64"
    first_src, first = image_bytes(page)
    assert "index=0" in first_src and "variable=velocity" in first_src

    page.focus("#slice-index")
    for _ in range(10):  # a person pressing the arrow key on the plane slider
        page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#slice-image').src.includes('index=10')")
    moved_src, moved = image_bytes(page)
    assert page.inner_text("#slice-index-value") == "10"
    assert moved != first

    page.select_option("#slice-variable", "pressure")
    page.wait_for_function("() => document.querySelector('#slice-image').src.includes('variable=pressure')")
    assert page.eval_on_selector_all("#slice-component option", "os => os.map(o => o.textContent)") == ["p"]
    _, pressure = image_bytes(page)
    assert pressure not in (first, moved)

    page.fill("#slice-time", "5")  # the time slider to the sixth stored time
    page.wait_for_function("() => document.querySelector('#slice-image').src.includes('time=6.25')")
    assert page.inner_text("#slice-time-value") == "6.25"
    assert page.get_attribute("#spectrum-plot", "data-points") not in (None, "0")


def read_table(tab) -> tuple[list[str], np.ndarray]:
    header = tab.eval_on_selector_all("#result-table thead th", "ths => ths.map(t => t.textContent)")
    rows = tab.eval_on_selector_all(
        "#result-table tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))"
    )
    return header, np.array(rows, dtype=float)


def test_point_query_table_and_downloads_match_the_library(page, iso, tmp_path: Path):
    rng = np.random.default_rng(8)
    points = rng.uniform(0, 2 * np.pi, (12, 3))
    page.goto("/datasets/isotropic64/query")
    page.wait_for_selector("#caller-limits:has-text('64 points')")
    page.fill("#query-points", "x,y,z\n" + "\n".join(",".join(repr(float(v)) for v in p) for p in points))
    page.select_option("#query-operator", "gradient")
    page.select_option("#query-spatial", "lag6")
    page.select_option("#query-temporal", "pchip")
    page.fill("#query-time", "7.02")
    page.click("#query-submit")
    page.wait_for_selector("#query-result:not([hidden])", timeout=120_000)  # a cold numba cache compiles

    header, table = read_table(page)
    expected = iso.query_points(
        "velocity", points, time=7.02, spatial="lag6", temporal="pchip", operator="gradient"
    )
    assert header[:4] == ["#", "x", "y", "z"] and header[4:] == list(expected.components)
    np.testing.assert_array_equal(table[:, 1:4], points)
    np.testing.assert_allclose(table[:, 4:], np.asarray(expected.values).reshape(len(points), -1), rtol=1e-12)

    with page.expect_download() as info:
        page.click("#download-csv")
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert rows[0] == ["x", "y", "z", *expected.components]
    np.testing.assert_allclose(np.array(rows[1:], dtype=float)[:, 3:], table[:, 4:], rtol=0)

    with page.expect_download() as info:
        page.click("#download-hdf5")
    assert info.value.suggested_filename == "isotropic64_velocity_gradient_t7.02.h5"
    with h5py.File(info.value.path(), "r") as f:
        np.testing.assert_array_equal(f["points"][:], points)
        np.testing.assert_allclose(
            f["values"][:], np.asarray(expected.values).reshape(len(points), -1), rtol=1e-12
        )
        assert f.attrs["operator"] == "gradient" and f.attrs["spatial"] == "lag6"


def test_query_errors_and_the_public_limit_are_explained(page):
    page.goto("/datasets/isotropic64/query")
    page.wait_for_selector("#caller-limits:has-text('64 points')")
    page.select_option("#query-variable", "pressure")
    page.select_option("#query-operator", "vorticity")
    page.click("#query-submit")
    error = page.wait_for_selector("#error:not([hidden])").inner_text()
    assert (
        error == "operator 'vorticity' needs a 3-component velocity; 'pressure' has 1"
    )  # the server's words

    page.fill("#query-points", "\n".join("1,2,3" for _ in range(PUBLIC_POINTS + 1)))
    page.click("#query-submit")
    help_box = page.wait_for_selector("#limit-help:not([hidden])")
    text = help_box.inner_text()
    assert f"{PUBLIC_POINTS + 1} points" in text and "token" in text and "batch jobs" in text

    page.fill("#query-points", "1,2\n")
    page.click("#query-submit")
    assert "line 1: expected three numbers" in page.wait_for_selector("#error:not([hidden])").inner_text()


def test_small_cutout_downloads_and_matches(page, iso):
    page.goto("/datasets/isotropic64/cutout")
    page.wait_for_selector("#caller-limits:has-text('256.0 KiB')")
    for axis, (start, stop, step) in {"x": (0, 16, 1), "y": (-4, 12, 2), "z": (8, 16, 1)}.items():
        page.fill(f"#cutout-{axis}-start", str(start))
        page.fill(f"#cutout-{axis}-stop", str(stop))
        page.fill(f"#cutout-{axis}-step", str(step))
    page.select_option("#cutout-time", "6.5")
    # 16 x 8 x 8 points x 3 components x 4 bytes, shown before anything is sent
    assert page.inner_text("#cutout-size").startswith("1,024 points × 3 components = 12.0 KiB")
    assert page.inner_text("#cutout-submit") == "Download"
    with page.expect_download() as info:
        page.click("#cutout-submit")
    expected = iso.cutout("velocity", time=6.5, x=(0, 16, 1), y=(-4, 12, 2), z=(8, 16, 1)).data
    with h5py.File(info.value.path(), "r") as f:
        data = np.squeeze(f["velocity"][()])
    np.testing.assert_array_equal(data, expected)

    page.fill("#cutout-x-step", "0")
    assert "step must be at least 1" in page.inner_text("#cutout-size")
    assert page.is_disabled("#cutout-submit")


def test_public_caller_is_told_a_big_cutout_needs_a_token(page):
    page.goto("/datasets/isotropic64/cutout")
    page.wait_for_selector("#caller-limits:has-text('batch jobs need a token')")
    assert page.inner_text("#cutout-size").startswith("262,144 points × 3 components = 3.00 MiB")
    assert page.is_disabled("#cutout-submit")
    assert "token" in page.inner_text("#limit-help")


def test_big_cutout_becomes_a_job_that_reaches_done_and_downloads(page, iso, job_token):
    set_token(page, job_token)
    page.goto("/datasets/isotropic64/cutout")
    page.wait_for_selector("#caller-limits:has-text('bigger ones run as batch jobs')")
    page.fill("#cutout-x-step", "4")
    page.fill("#cutout-y-step", "4")
    page.fill("#cutout-z-stop", "32")
    page.select_option("#cutout-time", "7")
    assert "96.0 KiB" in page.inner_text("#cutout-size")  # 16 x 16 x 32 x 3 x 4: over the token's 64 KiB
    assert page.inner_text("#cutout-submit") == "Submit as a job"
    page.click("#cutout-submit")
    job_id = page.wait_for_selector("#cutout-status[data-job]").get_attribute("data-job")

    page.click("#job-link")
    page.wait_for_url("**/jobs")
    row = f"#jobs-table tr[data-job='{job_id}']"
    page.wait_for_selector(row)
    page.wait_for_selector(f"{row}[data-status='done']", timeout=60_000)  # the page polls by itself
    assert page.eval_on_selector(f"{row} progress", "p => p.value") == 1
    assert page.inner_text(f"{row} td:nth-child(3)") == "isotropic64"
    assert page.inner_text(f"{row} td:nth-child(7)") != ""  # the expiry time

    with page.expect_download() as info:
        page.click(f"{row} button.download:has-text('cutout.h5')")
    expected = iso.cutout("velocity", time=7.0, x=(0, 64, 4), y=(0, 64, 4), z=(0, 32, 1)).data
    with h5py.File(info.value.path(), "r") as f:
        np.testing.assert_array_equal(f["velocity"][0], expected)

    page.click(f"{row} button.cancel")  # a finished job's button deletes its files
    page.wait_for_selector(f"{row}[data-status='expired']")


def test_halo_table_sorts_filters_and_links_to_the_history(page, demo_data):
    from labservice.datasets.simulation import Simulation

    sim = Simulation(demo_data / "cosmo64")
    try:
        by_mass = sim.search_halos(30, {}, order_by=["-mass"], limit=50).frame
        heavy = sim.search_halos(30, {"mass__gt": "1e14"}, order_by=["-mass"], limit=1000).frame
    finally:
        sim.close()
    page.goto("/datasets/cosmo64")
    page.wait_for_selector("#halo-table tbody tr")
    ids = page.eval_on_selector_all("#halo-table tbody tr", "trs => trs.map(t => Number(t.dataset.halo))")
    assert ids == [int(i) for i in by_mass["id"]]

    page.click("#halo-table th[data-column='mass']")  # already descending: now ascending
    page.wait_for_selector("#halo-table th[data-column='mass'][aria-sort='ascending']")
    masses = page.eval_on_selector_all(
        "#halo-table tbody tr td:nth-child(2)", "tds => tds.map(t => Number(t.textContent))"
    )
    assert masses == sorted(masses)

    page.fill("#halo-mass-min", "1e14")
    page.click("#halo-search")
    page.wait_for_selector(f"#halo-count:has-text('of {len(heavy)} matching')")
    assert page.locator("#halo-table tbody tr").count() == len(heavy)

    page.click(f"#halo-table tbody tr[data-halo='{int(heavy['id'].iloc[0])}'] a")
    page.wait_for_selector("#mass-history")
    assert int(page.get_attribute("#mass-history", "data-points")) > 1
