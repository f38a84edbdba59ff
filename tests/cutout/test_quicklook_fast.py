"""The fast slice renderer draws what matplotlib draws: same size, the same pixels (within a level or two,
at a handful of edge pixels more), decodable PNGs, frames reused across data, titles and limits."""

from __future__ import annotations

import io
import threading

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image

from labservice.cutout import cutout_slice_png, quicklook_frame, read_cutout, render_slice_png
from labservice.errors import InvalidInput


def plane(n: int = 64, phase: float = 0.2) -> np.ndarray:
    x = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.sin(1.3 * x[None, :] + phase) * np.cos(2.1 * x[:, None])


def pixels(png: bytes) -> np.ndarray:
    return np.round(imread(io.BytesIO(png))[..., :3] * 255).astype(np.int16)


def assert_looks_the_same(fast: bytes, reference: bytes) -> None:
    a, b = pixels(fast), pixels(reference)
    assert a.shape == b.shape
    off = np.abs(a - b).max(axis=2)
    assert (off <= 2).mean() >= 0.999, f"{(off > 2).sum()} pixels differ by more than 2 levels"
    assert (off <= 40).mean() >= 0.99999  # no block of wrong colour anywhere
    with Image.open(io.BytesIO(fast)) as im:  # a second decoder agrees
        assert im.size == (a.shape[1], a.shape[0]) and np.array_equal(np.asarray(im.convert("RGB")), a)


STRETCHED = np.tanh(np.linspace(-2, 2, 16)) / np.tanh(2)
SPIKY = np.where(plane() > 0.6, np.nan, plane())
SPIKY[3, 4], SPIKY[9, 9] = np.inf, -np.inf

CASES = {
    "default 720": {"plane": plane(), "extent": (0, 6.28, 0, 6.28)},
    "tall viridis": {"plane": plane()[:, :40], "extent": (0, 1, 0, 3), "cmap": "viridis", "width_px": 500},
    "small, offset labels": {
        "plane": 1e-5 * plane()[:16, :20] + 3e-3,
        "extent": (0, 1, 0, 1),
        "cmap": "magma",
        "width_px": 300,
    },
    "non-uniform mesh": {
        "plane": plane(16),
        "extent": (0, 1, -1, 1),
        "coords": (np.linspace(0, 1, 16), STRETCHED),
        "cmap": "cividis",
    },
    "NaN, inf, given limits": {
        "plane": SPIKY,
        "extent": (6.28, 0, 0, 6.28),  # a reversed axis
        "cmap": "gray",
        "vmin": -0.5,
        "vmax": 0.3,
    },
    "wide, few cells": {"plane": plane(64)[:5, :7], "extent": (0, 4, 0, 1), "width_px": 1100},
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_fast_matches_matplotlib(case):
    args = {"title": f"isotropic64 pressure p, z = 0.1, {case}", "units": "Pa"} | CASES[case]
    reference = render_slice_png(**args, renderer="matplotlib")
    for _ in range(2):  # building the frame, then from the cache
        assert_looks_the_same(render_slice_png(**args), reference)


def test_one_frame_serves_new_data_titles_and_limits():
    quicklook_frame._FRAMES.clear()
    quicklook_frame._BASES.clear()
    extent = (0, 6.28, 0, 6.28)
    for i, (vmin, vmax) in enumerate([(None, None), (-3.0, 3.0), (-2e-4, 1e-4)]):
        args = {"plane": plane(phase=i), "extent": extent, "title": f"z = {i}", "units": "m/s"}
        args |= {"vmin": vmin, "vmax": vmax}
        assert_looks_the_same(render_slice_png(**args), render_slice_png(**args, renderer="matplotlib"))
    assert len(quicklook_frame._FRAMES._items) == 1  # one look: one frame, drawn once
    assert len(quicklook_frame._BASES._items) == 3  # one decoration per title and limits


def test_huge_images_are_drawn_by_matplotlib():
    quicklook_frame._FRAMES.clear()
    huge = {"plane": plane(), "extent": (0, 1, 0, 1), "title": "huge", "units": "", "width_px": 2400}
    assert render_slice_png(**huge) == render_slice_png(**huge, renderer="matplotlib")
    assert len(quicklook_frame._FRAMES._items) == 0  # its frame would crowd the cache out


def test_concurrent_fast_renders_equal_serial():
    work = {i: {"plane": plane(phase=i), "extent": (0, 1, 0, 1), "title": f"plane {i}"} for i in range(6)}
    serial = {i: render_slice_png(**args, units="m/s") for i, args in work.items()}
    quicklook_frame._BASES.clear()  # the threads draw their titles on the one shared frame again
    results: dict[int, bytes] = {}

    def draw(i: int) -> None:
        results[i] = render_slice_png(**work[i], units="m/s")

    threads = [threading.Thread(target=draw, args=(i,)) for i in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == serial


@pytest.mark.parametrize("cmap", ["RdBu_r", "viridis", "gray"])
def test_colour_table_follows_matplotlib(cmap):
    values = np.concatenate([np.random.default_rng(0).uniform(-1.5, 1.5, 10_000), [-1.0, 1.0, 0.0, -7, 7]])
    expected = matplotlib.colormaps[cmap](matplotlib.colors.Normalize(-1.0, 1.0)(values), bytes=True)[:, :3]
    got = quicklook_frame.colour_lut(cmap)[quicklook_frame.colour_index(values, -1.0, 1.0)]
    assert np.array_equal(got, expected)
    bad = quicklook_frame.colour_index(np.array([np.nan, np.inf, -np.inf]), -1.0, 1.0)
    assert quicklook_frame.colour_lut(cmap)[bad].tolist() == [[255, 255, 255]] * 3


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (97, 131)])
def test_png_encoder_round_trips(shape):
    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    png = quicklook_frame.encode_png(rgb)
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)


def test_cutout_planes_match_matplotlib(zarr_dataset):
    reader = zarr_dataset.reader()
    # A z plane (uniform: an image) and an x plane (the stretched z axis vertical: a mesh).
    z_plane, x_plane = read_cutout(reader, "velocity", 0, z="4"), read_cutout(reader, "pressure", 1, x="3")
    for cut, component in [(z_plane, "uy"), (x_plane, 0)]:
        reference = cutout_slice_png(cut, component, width_px=480, renderer="matplotlib")
        assert_looks_the_same(cutout_slice_png(cut, component, width_px=480), reference)


def test_unknown_renderer_is_refused():
    with pytest.raises(InvalidInput, match="unknown renderer 'svg'"):
        render_slice_png(plane(8), (0, 1, 0, 1), "t", "u", renderer="svg")
