"""The summary curves behind the dataset pages (spectrum, profile) and their SVG drawing, in process."""

from __future__ import annotations

import re

import numpy as np
import pytest

from labservice.cutout.statistics import energy_spectrum, flow_curve, mean_profile
from labservice.svgplot import line_plot_svg


def test_spectrum_keeps_the_energy_and_puts_a_mode_in_its_shell():
    n, length = 32, 2 * np.pi
    x = np.arange(n) * length / n
    z, y, xx = np.meshgrid(x, x, x, indexing="ij")
    u = np.stack([np.sin(3 * xx), np.cos(4 * y) * 0.5, np.zeros_like(z)], axis=-1)
    k, e = energy_spectrum(u, (length, length, length))
    assert np.isclose(e.sum(), 0.5 * np.mean(np.sum(u**2, axis=-1)))  # Parseval
    assert np.isclose(e[3], 0.25) and np.isclose(e[4], 0.0625)  # 0.5 <sin^2> and 0.5 <0.25 cos^2>
    assert np.allclose(np.delete(e, [3, 4]), 0, atol=1e-14)
    assert np.allclose(k[:5], [0, 1, 2, 3, 4])


def test_spectrum_of_a_longer_box_uses_its_wavenumbers():
    n, length = 16, 4 * np.pi
    x = np.arange(n) * length / n
    z, y, xx = np.meshgrid(x, x, x, indexing="ij")
    k, e = energy_spectrum(np.sin(xx)[..., None], (length, length, length))
    assert np.isclose(k[np.argmax(e)], 1.0)  # sin(x) has k = 1 even when the shells are 0.5 wide


def test_profile_averages_over_the_other_axes():
    data = np.zeros((2, 5, 3, 1))
    data[:, :, :, 0] = np.arange(5)[None, :, None] * 2.0
    coords, mean = mean_profile(data, np.linspace(-1, 1, 5), "y")
    assert mean.shape == (5, 1) and np.allclose(mean[:, 0], [0, 2, 4, 6, 8])


def test_channel_profile_is_the_poiseuille_profile(demo_data):
    import labservice

    ds = labservice.open_dataset(str(demo_data / "channel64"))
    curve = flow_curve(ds.meta, ds.reader, 3)
    y = np.asarray(ds.meta.grid.axis("y").coords())
    # The travelling modes average out over the periodic x and z: the mean is u_center (1 - y^2).
    assert curve.kind == "profile" and curve.source == "computed" and curve.time == ds.meta.times[3]
    np.testing.assert_allclose(curve.x, y)
    np.testing.assert_allclose(curve.y, 1.0 - y**2, atol=2e-6)


def test_stored_spectrum_is_used_when_there_is_one(demo_data):
    import labservice

    ds = labservice.open_dataset(str(demo_data / "isotropic64"))
    curve = flow_curve(ds.meta, ds.reader)
    stored = ds.meta.extra["energy_spectrum"]
    assert curve.source == "metadata" and curve.xlog and curve.ylog
    np.testing.assert_array_equal(
        curve.y, [e for k, e in zip(stored["k"], stored["E"], strict=True) if k > 0 and e > 0]
    )


@pytest.mark.parametrize("ylog", [False, True])
def test_svg_escapes_text_and_drops_unplottable_points(ylog):
    svg = line_plot_svg(
        [1, 2, 3, np.nan],
        [0.0, 10.0, 100.0, 5.0],
        xlabel="k <x>",
        ylabel="E & F",
        title="<script>",
        ylog=ylog,
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "E &amp; F" in svg
    assert int(re.search(r'data-points="(\d+)"', svg).group(1)) == (2 if ylog else 3)
    assert " style=" not in svg  # the portal's CSP forbids inline styles


def test_a_curve_is_not_computed_when_it_would_read_too_much(demo_data):
    import labservice

    ds = labservice.open_dataset(str(demo_data / "channel64"))
    # 64 x 65 x 64 velocity (3 x float32) is about 3.2 MB of chunks: under a 1 MB cap nothing is read.
    assert flow_curve(ds.meta, ds.reader, 0, max_read_bytes=1 << 20) is None
    assert flow_curve(ds.meta, ds.reader, 0, max_read_bytes=8 << 20) is not None
