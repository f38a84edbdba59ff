"""Quick-look PNGs: valid files of the asked size that change with the data; bad input is refused."""

from __future__ import annotations

import io
import struct
import threading

import numpy as np
import pytest
from matplotlib.image import imread

from labservice.cutout import cutout_slice_png, read_cutout, render_slice_png
from labservice.errors import InvalidInput

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def plane(phase: float = 0.0, n: int = 32) -> np.ndarray:
    x = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.sin(x[None, :] + phase) * np.cos(x[:, None])


def test_png_signature_size_and_content_changes():
    a = render_slice_png(plane(), (0, 6.28, 0, 6.28), "velocity ux, z = 0", "m/s")
    b = render_slice_png(plane(1.0), (0, 6.28, 0, 6.28), "velocity ux, z = 0", "m/s")
    w, h = png_size(a)
    assert w == 720 and 400 <= h <= 900
    assert png_size(b) == (w, h) and a != b
    pixels_a, pixels_b = imread(io.BytesIO(a)), imread(io.BytesIO(b))
    assert pixels_a.shape[:2] == (h, w)
    assert np.abs(pixels_a - pixels_b).mean() > 0.01  # the image itself changed, not just metadata
    assert len(np.unique(pixels_a.reshape(-1, pixels_a.shape[-1]), axis=0)) > 50  # a colour map was drawn


def test_non_uniform_coords_viridis_and_constant_plane():
    y = np.tanh(np.linspace(-2, 2, 16)) / np.tanh(2)
    out = render_slice_png(
        plane(n=16),
        (0, 1, -1, 1),
        "channel",
        "",
        cmap="viridis",
        coords=(np.linspace(0, 1, 16), y),
        width_px=300,
    )
    assert png_size(out)[0] == 300
    flat = render_slice_png(np.full((8, 8), 2.5), (0, 1, 0, 1), "flat", "Pa", vmin=None, vmax=None)
    assert flat[:8] == PNG_SIGNATURE


def test_concurrent_renders_are_independent():
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        results[i] = render_slice_png(plane(i), (0, 1, 0, 1), f"plane {i}", "m/s", width_px=200)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    serial = {
        i: render_slice_png(plane(i), (0, 1, 0, 1), f"plane {i}", "m/s", width_px=200) for i in range(3)
    }
    assert results == serial


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"plane": np.zeros(5)}, "2-D plane"),
        ({"cmap": "jet"}, "unknown colour map"),
        ({"vmin": 2.0, "vmax": 1.0}, "vmin must be below vmax"),
        ({"extent": (0, 1, 0)}, "extent must be 4 finite numbers"),
        ({"width_px": 10}, "width_px"),
        ({"coords": (np.arange(3.0), np.arange(8.0))}, "coords must have lengths"),
    ],
)
def test_bad_input(kwargs, words):
    args = {"plane": np.zeros((8, 8)), "extent": (0, 1, 0, 1), "title": "t", "units": "u"} | kwargs
    with pytest.raises(InvalidInput, match=words):
        render_slice_png(**args)


def test_slice_of_a_cutout(zarr_dataset):
    reader = zarr_dataset.reader()
    z_plane = read_cutout(reader, "velocity", 0, z="4")
    a = cutout_slice_png(z_plane, "uy", width_px=200)
    b = cutout_slice_png(z_plane, 2, width_px=200)
    assert png_size(a)[0] == 200 and a != b
    # An x-normal plane has the stretched z axis vertical: drawn on the real coordinates.
    x_plane = read_cutout(reader, "pressure", 1, x="3")
    assert cutout_slice_png(x_plane, width_px=200)[:8] == PNG_SIGNATURE
    with pytest.raises(InvalidInput, match="Did you mean 'ux'"):
        cutout_slice_png(z_plane, "ix")
    with pytest.raises(InvalidInput, match="one axis of size 1"):
        cutout_slice_png(read_cutout(reader, "velocity", 0, "0:2", "0:2", "0:2"))
