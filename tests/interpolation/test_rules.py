"""The rules written once (issue 18): series lengths, output widths, point checks, stored-time lookup and
index ranges, each asserted where the service relies on it."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.errors import InvalidInput, LimitExceeded, OutOfDomain
from labservice.interpolation.engine import as_points
from labservice.interpolation.operators import all_operators, component_names, output_width
from labservice.interpolation.temporal import MAX_SERIES, series, series_length, steps_in
from tests.plugin.grids import uniform_axis


def test_series_length_counts_as_series_builds_and_refuses_clearly():
    for start, end, step in [(0.0, 0.4, 0.1), (0.5, 1.9, 0.05), (1.0, 1.0, 0.3), (0.0, 1.0, 0.3)]:
        assert series_length(start, end, step) == series(start, end, step).size
    assert series_length(0.0, 0.3, 0.1) == 4  # 0.3 / 0.1 rounds to 2.9999999999999996: within 1e-9
    assert series_length(0.0, MAX_SERIES - 1.0, 1.0) == MAX_SERIES
    with pytest.raises(LimitExceeded, match=f"at most {MAX_SERIES} times.*larger step"):
        series_length(0.0, float(MAX_SERIES), 1.0)
    with pytest.raises(LimitExceeded):  # a denormal step gives a huge count, not an OverflowError
        series_length(6.0, 9.0, 5e-324)
    for bad in [(1.0, 0.0, 0.1), (0.0, 1.0, 0.0), (0.0, 1.0, float("nan"))]:
        with pytest.raises(InvalidInput, match="start <= end and step > 0"):
            series_length(*bad)
    assert steps_in(-1.0, 0.25) == 4 and steps_in(3.0, 5e-324) == 10**15


def test_output_width_is_the_number_of_component_names():
    for op in all_operators():
        for ncomp in (1, 3):
            assert output_width(op, ncomp) == len(component_names([f"c{i}" for i in range(ncomp)], op))
    assert output_width("gradient", 3) == 9 and output_width("hessian", 1) == 6
    assert output_width("strain_rate", 3) == 6  # jobs' old table said 3 for every derived quantity
    with pytest.raises(InvalidInput, match="Did you mean 'gradient'"):
        output_width("gradiant", 3)


def test_as_points_strict_refuses_what_a_request_must_not_send():
    assert as_points([0.1, 0.2, 0.3]).shape == (1, 3)  # in process: one point is fine
    assert np.isnan(as_points([[np.nan, 0, 0]])).any()  # left to the domain check, which names the point
    cases = [
        ([0.1, 0.2, 0.3], "shape (N, 3)"),
        (np.zeros((0, 3)), "empty"),
        ([[0, np.inf, 0]], "finite numbers; row 0"),
        ([["a", "b", "c"]], "number triples"),
        (np.zeros((1, 3), dtype=complex), "dtype complex128"),
        ([[1, 2]], "got shape (1, 2)"),
    ]
    for value, words in cases:
        with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
            as_points(value, strict=True)
        assert str(err.value).startswith("points ")


def test_filter_and_threshold_use_the_cutouts_time_lookup_and_ranges(make_dataset):
    axes = (uniform_axis(8), uniform_axis(8), uniform_axis(8))
    ds = make_dataset(axes, {"p": lambda X, Y, Z, t: (X + 0 * Y + 0 * Z + t)[..., None]}, times=(0.0, 1000.0))
    # One tolerance, relative to the largest stored time: 5e-7 is stored time 0 on an axis reaching 1000
    # (the facade's old lookup, relative to t itself, refused it).
    at = ds.filter("p", [[1.0, 1.0, 1.0]], 1, time=5e-7)
    assert at == ds.filter("p", [[1.0, 1.0, 1.0]], 1, time=0.0)
    with pytest.raises(OutOfDomain, match="between stored times"):
        ds.filter("p", [[1.0, 1.0, 1.0]], 1, time=2e-6)
    with pytest.raises(OutOfDomain, match="between stored times 0 and 1000"):
        ds.filter("p", [[1.0, 1.0, 1.0]], 1, time=500.0)
    # Threshold boxes take the cutouts' range syntax, strides included.
    res = ds.threshold("p", -1.0, time=0.0, x="0:8:4", y=(2, 3), z="5", scalar="value")
    assert sorted(map(tuple, res.indices.tolist())) == [(0, 2, 5), (4, 2, 5)]
    with pytest.raises(InvalidInput, match="start:stop:step"):
        ds.threshold("p", 0.0, time=0.0, x="a:b", scalar="value")
    with pytest.raises(InvalidInput, match="covers more than the 8 nodes"):
        ds.threshold("p", 0.0, time=0.0, x=(-2, 8), scalar="value")
