"""Closed-form weights: exact tables, partition of unity, polynomial reproduction on any axis."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from labservice.interpolation.weights import FD_FIRST, FD_SECOND, METHODS, weights_1d
from labservice.storage.metadata import Axis

from .conftest import stretched_axis, uniform_axis

DEGREE = {"trilinear": 1, "lag4": 3, "lag6": 5, "lag8": 7, "m1q4": 2, "m2q8": 5, "fd4lag4": 3}


def _lagrange_derivative_at_centre(m: int, order: int) -> list[Fraction]:
    """Exact FD weights: derivatives of the Lagrange basis on nodes -m..m at 0, in rationals."""
    nodes = list(range(-m, m + 1))
    out = []
    for j in nodes:
        # coefficients of prod_{k != j} (t - k) / (j - k), as a polynomial in t
        poly = [Fraction(1)]
        den = Fraction(1)
        for k in nodes:
            if k == j:
                continue
            poly = [Fraction(0)] + poly
            for i in range(len(poly) - 1):
                poly[i] -= k * poly[i + 1]
            den *= j - k
        out.append(poly[order] * (1 if order == 1 else 2) / den)
    return out


@pytest.mark.parametrize("row,n", [(0, 4), (1, 6), (2, 8)])
def test_fd_tables_are_the_centred_lagrange_derivatives(row, n):
    first = _lagrange_derivative_at_centre(n // 2, 1)
    second = _lagrange_derivative_at_centre(n // 2, 2)
    assert np.array_equal(FD_FIRST[row, : n + 1], np.array([float(v) for v in first]))
    assert np.allclose(FD_SECOND[row, : n + 1], [float(v) for v in second], rtol=0, atol=1e-15)


# splines are defined on uniform axes only (an error is raised on stretched axes; tested elsewhere)
REPRO_CASES = [
    (m, kind)
    for m in METHODS
    if not m.startswith("fd") or m == "fd4lag4"
    for kind in ("periodic", "wall", "stretched")
    if not (kind == "stretched" and METHODS[m].uniform_only)
]


@pytest.mark.parametrize("method,axis_kind", REPRO_CASES)
def test_polynomial_reproduction_1d(method, axis_kind):
    axis = {"periodic": uniform_axis(16), "wall": uniform_axis(16, periodic=False, length=2.0, start=-1.0),
            "stretched": stretched_axis(16)}[axis_kind]
    c = axis.coords()
    deg = DEGREE.get(method, 0)
    rng = np.random.default_rng(1)
    lo, hi = (c[3], c[-5]) if axis.periodic else (c[0], c[-1])  # periodic: stay off the seam (no wrap of x^d)
    for x in np.concatenate([rng.uniform(lo, hi, 40), c[4:6], [c[0], c[-1]] if not axis.periodic else []]):
        start, w, status = weights_1d(method, x, axis)
        idx = start + np.arange(w.shape[1])
        nodes = c[idx % axis.size] + (axis.period or 0) * (idx // axis.size)
        for d in range(deg + 1):
            scale = max(1.0, abs(x)) ** d
            assert abs(w[0] @ nodes**d - x**d) <= 1e-12 * scale
            if METHODS[method].max_derivative >= 1 and d >= 1 and method != "fd4lag4":
                assert abs(w[1] @ nodes**d - d * x ** (d - 1)) <= 1e-9 * scale
            if METHODS[method].max_derivative >= 2 and d >= 2 and method not in ("fd4lag4", "m1q4"):
                assert abs(w[2] @ nodes**d - d * (d - 1) * x ** (d - 2)) <= 1e-7 * scale


@pytest.mark.parametrize("method", list(METHODS))
def test_weights_sum_to_one_and_derivative_weights_to_zero(method):
    axis = uniform_axis(32)
    for x in np.random.default_rng(2).uniform(0, 2 * np.pi, 20):
        _, w, _ = weights_1d(method, x, axis)
        assert w[0].sum() == pytest.approx(1.0, abs=1e-13)
        assert w[1].sum() == pytest.approx(0.0, abs=1e-10)
        assert w[2].sum() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("method", list(METHODS))
def test_grid_nodes_give_exact_unit_weights(method):
    axis = uniform_axis(32)
    for i in (0, 5, 31):
        x = i * (2 * np.pi / 32)
        start, w, _ = weights_1d(method, x, axis)
        hit = np.zeros(w.shape[1])
        hit[(i - start) % 32] = 1.0
        assert np.array_equal(w[0], hit)


def test_wall_stencils_shift_and_are_flagged():
    axis = Axis(size=10, periodic=False, start=0.0, step=1.0)
    start, _, status = weights_1d("lag8", 0.5, axis)
    assert (start, status) == (0, 1)
    start, _, status = weights_1d("lag8", 8.7, axis)
    assert (start, status) == (2, 1)
    start, _, status = weights_1d("lag4", 4.5, axis)
    assert (start, status) == (3, 0)
    assert weights_1d("lag4", 9.5, axis)[2] == 2


def test_splines_match_the_reference_weights_at_quarter_cells():
    axis = uniform_axis(32)
    h = 2 * np.pi / 32
    f = 0.25
    _, w, _ = weights_1d("m1q4", (5 + f) * h, axis)
    expect = [-f / 2 + f**2 - f**3 / 2, 1 - 5 / 2 * f**2 + 3 / 2 * f**3, f / 2 + 2 * f**2 - 3 / 2 * f**3,
              -(f**2) / 2 + f**3 / 2]
    assert np.allclose(w[0], expect, rtol=0, atol=1e-15)
