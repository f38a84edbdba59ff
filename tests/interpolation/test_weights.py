"""Closed-form weights: exact tables, partition of unity, polynomial reproduction on any axis."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from labservice.interpolation.weights import FD_FIRST, FD_SECOND, METHODS, weights_1d
from labservice.storage.metadata import Axis
from tests.plugin.grids import stretched_axis, uniform_axis

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


@pytest.mark.parametrize("periodic", [True, False])
def test_fd4lag4_closed_form_is_the_general_path_to_the_last_bit(periodic):
    """On uniform axes the kernels weight fd4lag4 in closed form; it must be the general path's sums in
    the same order (bit for bit), and must decline stencils shifted at a wall, which only the general
    path handles."""
    from labservice.interpolation.weights import SCRATCH_ROWS, WMAX, AxisArrays, axis_weights, fd4lag4_uniform
    from labservice.storage.metadata import Grid

    n = 24
    axis = uniform_axis(n, periodic=periodic, start=-0.7)
    arrs = AxisArrays.from_grid(Grid(x=axis, y=axis, z=axis))
    c = axis.coords()
    rng = np.random.default_rng(11)
    h = c[1] - c[0]
    xs = np.concatenate([
        rng.uniform(c[0], c[-1], 300),
        c,  # nodes: weights exactly 1 and 0
        c[:-1] + h * rng.choice([1e-13, 0.5, 1 - 1e-13], n - 1),  # next to nodes, mid-cells
        [c[0] - 3 * h, c[-1] + 2.5 * h] if periodic else [],  # beyond the seam (periodic only)
    ])
    sc = np.zeros((SCRATCH_ROWS, WMAX + 1))
    closed_form = shifted = 0
    for x in xs:
        for nder in (0, 1, 2):
            fast = np.full((1, 3, WMAX), np.nan)
            ref = np.full((3, WMAX), np.nan)
            took = fd4lag4_uniform(float(x), n, periodic, arrs.x0[0], arrs.dx[0], nder, fast, 0)
            _, status = axis_weights(METHODS["fd4lag4"].code, 0, float(x), nder, *arrs.as_tuple(), ref, sc)
            assert took == (status == 0), (x, status)
            if took:
                assert np.array_equal(fast[0, : nder + 1, :8], ref[: nder + 1, :8]), (x, nder)
                closed_form += 1
            else:
                shifted += 1
    assert closed_form > 500  # most points are interior (24 nodes: 7 cells lie near a wall)
    assert (shifted > 0) == (not periodic)


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("method", ["trilinear", "lag4", "lag6", "lag8"])
def test_stretched_lagrange_from_the_kept_start_is_the_general_path_to_the_last_bit(method, periodic):
    """On stretched axes the kernels weight Lagrange methods from the stencil start the placement kept;
    the sums must be the general path's, bit for bit, inside, at walls, at nodes and across the seam."""
    from labservice.interpolation.weights import (
        SCRATCH_ROWS,
        WMAX,
        AxisArrays,
        axis_weights,
        lagrange_stretched,
        place,
    )
    from labservice.storage.metadata import Grid

    n = 20
    s = np.linspace(0.0, 1.0, n, endpoint=not periodic)
    c = 2.0 * s + 0.3 * np.sin(2 * np.pi * s)  # strictly increasing, unevenly spaced
    axis = Axis(size=n, periodic=periodic, coordinates=list(c), length=2.0 if periodic else None)
    arrs = AxisArrays.from_grid(Grid(x=axis, y=axis, z=axis))
    code, width = METHODS[method].code, METHODS[method].width
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.uniform(c[0], c[-1], 200), c, 0.5 * (c[1:] + c[:-1]),
                         [c[0] - 0.7, c[-1] + 1.9, -4.1] if periodic else []])
    sc = np.zeros((SCRATCH_ROWS, WMAX + 1))
    statuses = set()
    for x in xs:
        _, _, start, status = place(code, 0, float(x), *arrs.as_tuple())
        statuses.add(int(status))
        for nder in range(METHODS[method].max_derivative + 1):
            fast = np.full((1, 3, WMAX), np.nan)
            ref = np.full((3, WMAX), np.nan)
            lagrange_stretched(code, 0, float(x), start, nder, *arrs.as_tuple(), fast, sc)
            axis_weights(code, 0, float(x), nder, *arrs.as_tuple(), ref, sc)
            assert np.array_equal(fast[0, : nder + 1, :width], ref[: nder + 1, :width]), (x, nder)
    assert statuses == ({0, 1} if not periodic and width > 2 else {0})  # stencils shifted at walls, if any
