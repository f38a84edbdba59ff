"""Closed-form one-dimensional interpolation and differentiation weights, computed per point.

Every spatial method is a tensor product of 1-D weight vectors, one per axis. For a coordinate ``x`` on an
axis this module returns the first node index ``start`` of the stencil and three weight vectors over the
nodes ``start .. start + width - 1``: the value weights and the weights of the first and second
derivatives (in physical units). Kernels in :mod:`labservice.interpolation.kernels` contract those vectors
with the stored data; they call :func:`axis_weights` for each point, so nothing is tabulated or quantised.

Methods (JHTDB's names):

- ``none``: the nearest node; ``trilinear``; ``lag4``, ``lag6``, ``lag8``: Lagrange polynomials on
  ``width`` nodes, barycentric-free direct products so that grid nodes are reproduced exactly;
- ``m1q4``, ``m2q8``: JHTDB's C1 and C2 piecewise-polynomial splines (uniform axes only);
- ``fd4noint``, ``fd6noint``, ``fd8noint``: centred finite differences at the nearest node;
- ``fd4lag4``: FD4 derivatives at the nodes, then lag4 interpolation of those.

On a non-periodic axis a stencil that would leave the grid is shifted to stay inside (one-sided) and the
point is flagged as clipped; the shifted stencil uses Lagrange weights on its actual nodes (so splines
become Lagrange of the same width there). Non-uniform axes use Lagrange weights from the real
coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numba
import numpy as np

WMAX = 9  # widest stencil (fd8noint)

# Method codes shared with the numba kernels.
NONE, TRILINEAR, LAG4, LAG6, LAG8, M1Q4, M2Q8, FD4, FD6, FD8, FD4LAG4 = range(11)

# Kinds of stencil.
_NEAREST, _LAGRANGE, _SPLINE, _FDNOINT, _FDLAG = range(5)


@dataclass(frozen=True)
class Method:
    """One spatial method: its code, stencil width, the derivative order it supports and its accuracy.

    ``order`` is the theoretical convergence order of the value, ``order_d1`` of first derivatives and
    ``order_d2`` of second derivatives at arbitrary points (0 when the method cannot give them).
    """

    name: str
    code: int
    width: int
    max_derivative: int
    uniform_only: bool
    order: int
    order_d1: int
    order_d2: int
    description: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("none", NONE, 1, 0, False, 1, 0, 0, "value at the nearest grid node"),
        Method("trilinear", TRILINEAR, 2, 1, False, 2, 1, 0, "tensor-product linear interpolation"),
        Method("lag4", LAG4, 4, 2, False, 4, 3, 2, "4-point Lagrange polynomial per axis"),
        Method("lag6", LAG6, 6, 2, False, 6, 5, 4, "6-point Lagrange polynomial per axis"),
        Method("lag8", LAG8, 8, 2, False, 8, 7, 6, "8-point Lagrange polynomial per axis"),
        Method("m1q4", M1Q4, 4, 2, True, 3, 2, 1, "C1 cubic spline (Catmull-Rom), uniform axes"),
        Method("m2q8", M2Q8, 8, 2, True, 6, 5, 4, "C2 quintic spline, uniform axes"),
        Method("fd4noint", FD4, 5, 2, False, 1, 4, 4, "4th-order centred differences at the nearest node"),
        Method("fd6noint", FD6, 7, 2, False, 1, 6, 6, "6th-order centred differences at the nearest node"),
        Method("fd8noint", FD8, 9, 2, False, 1, 8, 8, "8th-order centred differences at the nearest node"),
        Method("fd4lag4", FD4LAG4, 8, 2, False, 4, 4, 4, "FD4 derivatives at nodes, then lag4 interpolation"),
    )
}

# Exact centred stencils, offsets -m..m (from the reference notes; second derivatives are the standard
# centred second differences of the same order).
_FD1 = {
    4: [Fraction(1, 12), Fraction(-2, 3), 0, Fraction(2, 3), Fraction(-1, 12)],
    6: [Fraction(-1, 60), Fraction(3, 20), Fraction(-3, 4), 0, Fraction(3, 4), Fraction(-3, 20), Fraction(1, 60)],
    8: [Fraction(1, 280), Fraction(-4, 105), Fraction(1, 5), Fraction(-4, 5), 0,
        Fraction(4, 5), Fraction(-1, 5), Fraction(4, 105), Fraction(-1, 280)],
}
_FD2 = {
    4: [Fraction(-1, 12), Fraction(4, 3), Fraction(-5, 2), Fraction(4, 3), Fraction(-1, 12)],
    6: [Fraction(1, 90), Fraction(-3, 20), Fraction(3, 2), Fraction(-49, 18), Fraction(3, 2), Fraction(-3, 20),
        Fraction(1, 90)],
    8: [Fraction(-1, 560), Fraction(8, 315), Fraction(-1, 5), Fraction(8, 5), Fraction(-205, 72),
        Fraction(8, 5), Fraction(-1, 5), Fraction(8, 315), Fraction(-1, 560)],
}


def _table(rows: dict[int, list]) -> np.ndarray:
    out = np.zeros((3, WMAX))
    for r, n in enumerate((4, 6, 8)):
        out[r, : len(rows[n])] = [float(v) for v in rows[n]]
    return out


FD_FIRST = _table(_FD1)  # row 0: fd4, 1: fd6, 2: fd8
FD_SECOND = _table(_FD2)

# Spline weight polynomials: M[k, p] is the coefficient of f**p in the weight of node i + k + kmin.
M1Q4_COEF = np.array(
    [[0, -1 / 2, 1, -1 / 2], [1, 0, -5 / 2, 3 / 2], [0, 1 / 2, 2, -3 / 2], [0, 0, -1 / 2, 1 / 2]], dtype=np.float64
)
_M2Q8 = [
    [0, Fraction(-1, 60), Fraction(1, 180), Fraction(1, 12), Fraction(-7, 60), Fraction(2, 45)],
    [0, Fraction(3, 20), Fraction(-3, 40), Fraction(-217, 360), Fraction(61, 72), Fraction(-23, 72)],
    [0, Fraction(-3, 4), Fraction(3, 4), Fraction(63, 40), Fraction(-51, 20), Fraction(39, 40)],
    [1, 0, Fraction(-49, 36), Fraction(-13, 6), Fraction(25, 6), Fraction(-59, 36)],
    [0, Fraction(3, 4), Fraction(3, 4), Fraction(17, 9), Fraction(-145, 36), Fraction(59, 36)],
    [0, Fraction(-3, 20), Fraction(-3, 40), Fraction(-9, 8), Fraction(93, 40), Fraction(-39, 40)],
    [0, Fraction(1, 60), Fraction(1, 180), Fraction(49, 120), Fraction(-3, 4), Fraction(23, 72)],
    [0, 0, 0, Fraction(-11, 180), Fraction(19, 180), Fraction(-2, 45)],
]
M2Q8_COEF = np.array([[float(v) for v in row] for row in _M2Q8], dtype=np.float64)

# Points closer than this (in cells) to a node on a uniform axis are put on the node, so that node
# coordinates computed as x0 + i*dx reproduce stored values exactly despite round-off in x/dx.
SNAP = 1e-10
SCRATCH_ROWS = 13  # rows of the per-thread scratch array axis_weights needs


@dataclass(frozen=True)
class AxisArrays:
    """The three grid axes (x, y, z) packed as arrays for the numba kernels."""

    n: np.ndarray  # int64[3]
    periodic: np.ndarray  # int64[3]
    uniform: np.ndarray  # int64[3]
    x0: np.ndarray  # float64[3]
    dx: np.ndarray  # float64[3] (1.0 on non-uniform axes)
    period: np.ndarray  # float64[3] (0 on non-periodic axes)
    coords: np.ndarray  # float64[3, max n], node coordinates, padded

    @classmethod
    def from_grid(cls, grid) -> AxisArrays:
        """Build from a :class:`labservice.storage.metadata.Grid`."""
        axes = [grid.x, grid.y, grid.z]
        nmax = max(a.size for a in axes)
        coords = np.zeros((3, nmax))
        for i, a in enumerate(axes):
            c = a.coords()
            coords[i, : c.size] = c
            coords[i, c.size :] = c[-1]
        return cls(
            n=np.array([a.size for a in axes], dtype=np.int64),
            periodic=np.array([int(a.periodic) for a in axes], dtype=np.int64),
            uniform=np.array([int(a.uniform) for a in axes], dtype=np.int64),
            x0=np.array([a.coords()[0] for a in axes], dtype=np.float64),
            dx=np.array([float(a.step) if a.uniform else 1.0 for a in axes], dtype=np.float64),
            period=np.array([a.period or 0.0 for a in axes], dtype=np.float64),
            coords=coords,
        )

    def as_tuple(self) -> tuple:
        return (self.n, self.periodic, self.uniform, self.x0, self.dx, self.period, self.coords)


# ---------------------------------------------------------------------------------------------------------
# numba building blocks
# ---------------------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def method_width(code):
    if code == NONE:
        return 1
    if code == TRILINEAR:
        return 2
    if code == LAG4 or code == M1Q4:
        return 4
    if code == LAG6:
        return 6
    if code == FD4:
        return 5
    if code == FD6:
        return 7
    if code == FD8:
        return 9
    return 8  # LAG8, M2Q8, FD4LAG4


@numba.njit(cache=True)
def lagrange_weights(u, m, t, w, nder, sc):
    """Lagrange basis weights on nodes ``u[:m]`` at ``t``, and their first/second derivatives.

    Writes ``w[0, :m]`` (values), ``w[1, :m]`` and ``w[2, :m]`` (if ``nder`` asks). Numerators are products
    of differences accumulated as prefix and suffix products, so at a node the weights are exactly 0 and 1.
    ``sc`` is scratch space of shape (>= 6, >= m + 1), passed in so kernels do not allocate per point.
    """
    p0 = sc[0]
    p1 = sc[1]
    p2 = sc[2]
    s0 = sc[3]
    s1 = sc[4]
    s2 = sc[5]
    p0[0] = 1.0
    p1[0] = 0.0
    p2[0] = 0.0
    for j in range(m):  # prefix products of (t - u_k), k < j, with derivatives in t
        d = t - u[j]
        p2[j + 1] = p2[j] * d + 2.0 * p1[j]
        p1[j + 1] = p1[j] * d + p0[j]
        p0[j + 1] = p0[j] * d
    s0[m] = 1.0
    s1[m] = 0.0
    s2[m] = 0.0
    for j in range(m - 1, -1, -1):
        d = t - u[j]
        s2[j] = s2[j + 1] * d + 2.0 * s1[j + 1]
        s1[j] = s1[j + 1] * d + s0[j + 1]
        s0[j] = s0[j + 1] * d
    hit = -1
    for j in range(m):
        if t == u[j]:
            hit = j
    for j in range(m):
        den = 1.0
        for k in range(m):
            if k != j:
                den *= u[j] - u[k]
        a0 = p0[j]
        b0 = s0[j + 1]
        w[0, j] = a0 * b0 / den
        if nder >= 1:
            w[1, j] = (p1[j] * b0 + a0 * s1[j + 1]) / den
        if nder >= 2:
            w[2, j] = (p2[j] * b0 + 2.0 * p1[j] * s1[j + 1] + a0 * s2[j + 1]) / den
    if hit >= 0:  # on a node: exactly 1 and 0 (the division above may round to 1 - eps)
        for j in range(m):
            w[0, j] = 0.0
        w[0, hit] = 1.0


@numba.njit(cache=True)
def spline_weights(coef, f, w, nder):
    """Polynomial spline weights ``sum_p coef[k, p] f**p`` and their f-derivatives (per cell, unscaled)."""
    m, deg = coef.shape
    for k in range(m):
        v = 0.0
        d1 = 0.0
        d2 = 0.0
        for p in range(deg - 1, -1, -1):  # Horner, with derivatives
            d2 = d2 * f + 2.0 * d1
            d1 = d1 * f + v
            v = v * f + coef[k, p]
        w[0, k] = v
        w[1, k] = d1
        w[2, k] = d2


def _denominators() -> np.ndarray:
    out = np.zeros((WMAX + 1, WMAX))
    for m in range(1, WMAX + 1):
        for j in range(m):
            out[m, j] = 1.0 / np.prod([j - k for k in range(m) if k != j], dtype=np.float64)
    return out


LAG_INV_DEN = _denominators()  # 1 / prod_{k != j} (j - k) for nodes 0..m-1


@numba.njit(cache=True, inline="always")
def _lagrange_uniform_values(m, t, w):
    """Value weights on nodes 0..m-1 at t (index units): prefix/suffix products, constant denominators."""
    hit = -1
    pre = 1.0
    for j in range(m):
        w[0, j] = pre
        d = t - j
        if d == 0.0:
            hit = j
        pre *= d
    suf = 1.0
    for j in range(m - 1, -1, -1):
        w[0, j] *= suf * LAG_INV_DEN[m, j]
        suf *= t - j
    if hit >= 0:
        for j in range(m):
            w[0, j] = 0.0
        w[0, hit] = 1.0


@numba.njit(cache=True, inline="always")
def node_coord(a, j, n, periodic, uniform, x0, dx, period, coords):
    """Physical coordinate of node j on axis a, unwrapping periodic indices outside [0, n)."""
    if uniform[a]:
        return x0[a] + j * dx[a]
    nn = n[a]
    if periodic[a]:
        q = j // nn
        return coords[a, j - q * nn] + q * period[a]
    return coords[a, j]


@numba.njit(cache=True, inline="always")
def wrap_coordinate(x, c0, period):
    """x moved by whole periods into [c0, c0 + period) (a periodic stretched axis starting at c0)."""
    xs = c0 + (x - c0) - period * np.floor((x - c0) / period)
    if xs >= c0 + period:
        xs = c0
    return xs


@numba.njit(cache=True)
def locate(a, x, nearest, n, periodic, uniform, x0, dx, period, coords):
    """Cell (or nearest node) of coordinate x on axis a.

    Returns ``(i, t, status)``: ``i`` the node index (lower node of the cell, or nearest node when
    ``nearest``), ``t`` the position in index units for uniform axes (or the wrapped physical coordinate
    for non-uniform axes), ``status`` 0 inside, 2 outside a non-periodic domain or not finite.
    """
    nn = n[a]
    if not np.isfinite(x):
        return 0, 0.0, 2
    if uniform[a]:
        t = (x - x0[a]) / dx[a]
        if periodic[a]:
            t = t - nn * np.floor(t / nn)
            if t >= nn:
                t = 0.0
        r = np.floor(t + 0.5)
        if abs(t - r) <= SNAP * max(1.0, abs(t)):
            t = r
            if periodic[a] and t >= nn:
                t = 0.0
        if not periodic[a]:
            if t < 0.0 or t > nn - 1:
                return 0, t, 2
        if nearest:
            i = int(np.floor(t + 0.5))
            if periodic[a] and i >= nn:
                i -= nn
            return i, t, 0
        i = int(np.floor(t))
        if not periodic[a] and i >= nn - 1:
            i = nn - 2 if nn >= 2 else 0
        return i, t, 0
    # non-uniform: wrap, then binary search
    xs = x
    if periodic[a]:
        xs = wrap_coordinate(x, coords[a, 0], period[a])
    elif xs < coords[a, 0] or xs > coords[a, nn - 1]:
        return 0, xs, 2
    lo = 0
    hi = nn - 1
    if xs >= coords[a, nn - 1]:
        lo = nn - 1
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if coords[a, mid] <= xs:
                lo = mid
            else:
                hi = mid
    i = lo
    if not periodic[a] and i >= nn - 1:
        i = nn - 2 if nn >= 2 else 0
    if nearest:
        right = node_coord(a, i + 1, n, periodic, uniform, x0, dx, period, coords)
        if right - xs < xs - coords[a, i]:
            i += 1
            if periodic[a] and i >= nn:
                i -= nn
    return i, xs, 0


@numba.njit(cache=True)
def place(code, a, x, n, periodic, uniform, x0, dx, period, coords):
    """Stencil placement only: ``(i, t, start, status)`` (see :func:`axis_weights`), no weights."""
    width = method_width(code)
    nearest = code == NONE or code == FD4 or code == FD6 or code == FD8
    i, t, status = locate(a, x, nearest, n, periodic, uniform, x0, dx, period, coords)
    if status == 2:
        return i, t, 0, 2
    if nearest:
        start = i - width // 2
    elif code == FD4LAG4:
        start = i - 3
    else:
        start = i - (width // 2 - 1)
    if not periodic[a]:
        nn = n[a]
        if start < 0:
            start = 0
            status = 1
        elif start + width > nn:
            start = nn - width
            status = 1
    return i, t, start, status


@numba.njit(cache=True)
def axis_weights(code, a, x, nder, n, periodic, uniform, x0, dx, period, coords, w, sc):
    """Stencil start and weights of method ``code`` for coordinate x on axis a.

    Fills ``w[0..nder, :width]`` with value, d/dx and d2/dx2 weights (physical units) and returns
    ``(start, status)`` where status is 0 (interior), 1 (stencil shifted at a wall) or 2 (x outside the
    domain). ``start`` may be negative or >= n on periodic axes; readers wrap it. ``sc`` is scratch of
    shape (SCRATCH_ROWS, WMAX + 1).
    """
    width = method_width(code)
    i, t, start, status = place(code, a, x, n, periodic, uniform, x0, dx, period, coords)
    if status == 2:
        return 0, 2
    for r in range(nder + 1):
        for k in range(width):
            w[r, k] = 0.0
    nearest = code == NONE or code == FD4 or code == FD6 or code == FD8
    if nder == 0 and uniform[a] and status == 0 and code >= TRILINEAR and code <= LAG8:
        _lagrange_uniform_values(width, t - start, w)
        return start, status
    if code == NONE:
        w[0, i - start] = 1.0
        return start, status
    h = dx[a]
    if code == FD4LAG4:
        _fdlag_weights(a, i, t, start, nder, n, periodic, uniform, x0, dx, period, coords, w, sc)
        return start, status
    if nearest:  # fd noint: derivatives of the Lagrange polynomial through the stencil, at node i
        if uniform[a] and status == 0:
            row = (code - FD4)
            w[0, i - start] = 1.0
            for k in range(width):
                w[1, k] = FD_FIRST[row, k] / h
                w[2, k] = FD_SECOND[row, k] / (h * h)
            return start, status
        _lagrange_on_nodes(a, start, width, i, True, nder, n, periodic, uniform, x0, dx, period, coords, t, w, sc)
        w[0, :] = 0.0
        w[0, i - start] = 1.0
        return start, status
    if (code == M1Q4 or code == M2Q8) and status == 0:
        coef = M1Q4_COEF if code == M1Q4 else M2Q8_COEF
        spline_weights(coef, t - i, w, nder)
        for k in range(width):
            w[1, k] /= h
            w[2, k] /= h * h
        return start, status
    _lagrange_on_nodes(a, start, width, i, False, nder, n, periodic, uniform, x0, dx, period, coords, t, w, sc)
    return start, status


@numba.njit(cache=True)
def _lagrange_on_nodes(a, start, width, i, at_node, nder, n, periodic, uniform, x0, dx, period, coords, t, w, sc):
    """Lagrange weights on nodes start..start+width-1, at t (or at node i when at_node)."""
    u = sc[6]
    if uniform[a]:
        # index units relative to start: nodes are exact small integers (t is wrapped to [0, n) and the
        # stencil may start below 0 on a periodic axis, so t - start is still inside the stencil)
        for k in range(width):
            u[k] = k
        tt = (i - start) if at_node else (t - start)
        lagrange_weights(u, width, tt, w, nder, sc)
        h = dx[a]
        for k in range(width):
            w[1, k] /= h
            w[2, k] /= h * h
    else:
        for k in range(width):
            u[k] = node_coord(a, start + k, n, periodic, uniform, x0, dx, period, coords)
        tt = node_coord(a, i, n, periodic, uniform, x0, dx, period, coords) if at_node else t
        if periodic[a] and not at_node and tt < u[0]:
            tt += period[a]
        lagrange_weights(u, width, tt, w, nder, sc)


@numba.njit(cache=True)
def _fdlag_weights(a, i, t, start, nder, n, periodic, uniform, x0, dx, period, coords, w, sc):
    """fd4lag4: lag4 weights over nodes L, then each node's FD4 stencil folded in (width 8 from start)."""
    nn = n[a]
    lag = sc[7:10]
    fd = sc[10:13]
    ls = i - 1
    if not periodic[a]:
        ls = min(max(ls, 0), nn - 4)
    _lagrange_on_nodes(a, ls, 4, i, False, 0, n, periodic, uniform, x0, dx, period, coords, t, lag, sc)
    for k in range(4):
        w[0, ls + k - start] = lag[0, k]
    if nder == 0:
        return
    for k in range(4):
        node = ls + k
        fs = node - 2
        if not periodic[a]:
            fs = min(max(fs, 0), nn - 5)
        if uniform[a] and fs == node - 2:
            for j in range(5):
                fd[1, j] = FD_FIRST[0, j] / dx[a]
                fd[2, j] = FD_SECOND[0, j] / (dx[a] * dx[a])
        else:
            _lagrange_on_nodes(a, fs, 5, node, True, 2, n, periodic, uniform, x0, dx, period, coords, 0.0, fd, sc)
        for j in range(5):
            w[1, fs + j - start] += lag[0, k] * fd[1, j]
            w[2, fs + j - start] += lag[0, k] * fd[2, j]


# ---------------------------------------------------------------------------------------------------------
# Hot path: placement once per point, then closed-form weights from the placement
# ---------------------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def method_offset(code):
    """Stencil nodes before the base node (the cell's lower node, or the nearest node for fd*noint/none)."""
    if code == NONE or code == FD4 or code == FD6 or code == FD8:
        return method_width(code) // 2
    if code == FD4LAG4:
        return 3
    return method_width(code) // 2 - 1


# Tables as flat tuples: numba freezes them as constants, so the scalar functions below touch no arrays
# (passing arrays into functions costs reference-count updates per call, which dominated the hot loop).
_INV_DEN_T = tuple(float(v) for v in LAG_INV_DEN.ravel())
_FD1_T = tuple(float(v) for v in FD_FIRST.ravel())
_FD2_T = tuple(float(v) for v in FD_SECOND.ravel())
_M1Q4_T = tuple(float(v) for v in M1Q4_COEF.ravel())
_M2Q8_T = tuple(float(v) for v in M2Q8_COEF.ravel())


@numba.njit(cache=True, inline="always")
def uniform_index(x, nn, periodic, x0, h):
    """Position of coordinate x in index units on a uniform axis (nn nodes from x0, spacing h), wrapped
    into [0, nn) on a periodic axis and snapped to a node within :data:`SNAP`: ``(t, inside)``, inside
    False when x is not finite or outside a non-periodic axis. :func:`locate`'s rules, scalars only."""
    if not np.isfinite(x):
        return 0.0, False
    t = (x - x0) / h
    if periodic and not (0.0 <= t < nn):  # wrap (skipped for the usual point inside the period)
        t = t - nn * np.floor(t / nn)
        if t >= nn:
            t = 0.0
    r = np.floor(t + 0.5)
    if abs(t - r) <= SNAP * max(1.0, abs(t)):
        t = r
        if periodic and t >= nn:
            t = 0.0
    if not periodic and (t < 0.0 or t > nn - 1):
        return t, False
    return t, True


@numba.njit(cache=True, inline="always")
def place_uniform(code, x, nn, periodic, x0, h):
    """Placement of coordinate x on a uniform axis (nn nodes from x0, spacing h): ``(start, u, status)``.

    ``start`` is the first stencil node (``start + method_offset`` lies in [0, nn)), ``status`` 0
    interior, 1 shifted at a wall, 2 outside (or not finite), and ``u`` the position in index units
    relative to ``start`` (for nearest-node methods the node itself, an integer): all the closed-form
    weights need. Same rules as :func:`place` (snapping, wrapping, wall shifts); scalars only.
    """
    t, inside = uniform_index(x, nn, periodic, x0, h)
    if not inside:
        return 0, 0.0, 2
    width = method_width(code)
    nearest = code == NONE or code == FD4 or code == FD6 or code == FD8
    if nearest:
        i = int(np.floor(t + 0.5))
        if periodic and i >= nn:
            i -= nn
    else:
        i = int(np.floor(t))
        if not periodic and i >= nn - 1:
            i = nn - 2 if nn >= 2 else 0
    start = i - method_offset(code)
    status = 0
    if not periodic:
        if start < 0:
            start = 0
            status = 1
        elif start + width > nn:
            start = nn - width
            status = 1
    u = float(i - start) if nearest else t - start
    return start, u, status


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lagrange_stretched(code, a, x, start, nder, n, periodic, uniform, x0, dx, period, coords, w, sc):
    """Weights of a Lagrange method (trilinear, lag4/6/8) at coordinate x on the stretched axis a, over
    the stencil nodes ``start ..`` its width, into ``w[a, 0..nder, :width]`` (physical units).

    The general path's sums (:func:`_lagrange_on_nodes`) from the stencil start the placement kept,
    without placing x a second time (a binary search) or its chain of calls: about 4x faster per axis.
    """
    width = method_width(code)
    xs = wrap_coordinate(x, coords[a, 0], period[a]) if periodic[a] else x  # as locate() wraps it
    u = sc[6]
    for k in range(width):
        u[k] = node_coord(a, start + k, n, periodic, uniform, x0, dx, period, coords)
    if periodic[a] and xs < u[0]:
        xs += period[a]
    wa = w[a]
    for r in range(nder + 1):
        for k in range(width):
            wa[r, k] = 0.0
    lagrange_weights(u, width, xs, wa, nder, sc)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def fd4lag4_uniform(x, nn, periodic, x0, h, nder, w, a):
    """fd4lag4 weights of coordinate x on a uniform axis, in closed form, into ``w[a, 0..nder, 0..7]``
    (physical units); returns False, writing nothing, when the stencil is shifted at a wall or x is
    outside (:func:`axis_weights` handles those).

    The same sums as :func:`_fdlag_weights` (lag4 over stencil nodes 2..5, each node's FD4 stencil
    folded in), without its general placement and scratch arrays: about 20x faster per axis.
    """
    t, inside = uniform_index(x, nn, periodic, x0, h)
    if not inside:
        return False
    i = int(np.floor(t))
    if not periodic and (i - 3 < 0 or i + 5 > nn):
        return False
    t = t - (i - 1)  # lag4 on nodes i - 1 .. i + 2, stencil nodes 2..5 (the stencil starts at i - 3)
    d0 = t
    d1 = t - 1.0
    d2 = t - 2.0
    d3 = t - 3.0
    # prefix and suffix products in lagrange_weights' order, over its exact denominators
    lag0 = ((d3 * d2) * d1) / -6.0
    lag1 = d0 * (d2 * d3) / 2.0
    lag2 = (d0 * d1) * d3 / -2.0
    lag3 = ((d0 * d1) * d2) / 6.0
    if t == 0.0 or t == 1.0 or t == 2.0 or t == 3.0:  # on a node: exactly 1 and 0
        lag0 = 1.0 if t == 0.0 else 0.0
        lag1 = 1.0 if t == 1.0 else 0.0
        lag2 = 1.0 if t == 2.0 else 0.0
        lag3 = 1.0 if t == 3.0 else 0.0
    for r in range(nder + 1):
        for j in range(8):
            w[a, r, j] = 0.0
    w[a, 0, 2] = lag0
    w[a, 0, 3] = lag1
    w[a, 0, 4] = lag2
    w[a, 0, 5] = lag3
    if nder >= 1:
        for k in range(4):
            lk = lag0 if k == 0 else lag1 if k == 1 else lag2 if k == 2 else lag3
            for j in range(5):
                w[a, 1, k + j] += lk * (FD_FIRST[0, j] / h)
                if nder >= 2:
                    w[a, 2, k + j] += lk * (FD_SECOND[0, j] / (h * h))
    return True


@numba.njit(cache=True, inline="always")
def lagrange_node(W, j, u, nder):
    """Weight of node j of the Lagrange polynomial on nodes 0..W-1 at u, with its first and second
    u-derivatives: ``(v, d1, d2)``. O(W) products, constant denominators; exactly 0 or 1 at nodes."""
    p0 = 1.0
    p1 = 0.0
    p2 = 0.0
    for k in range(W):
        if k != j:
            d = u - k
            if nder >= 2:
                p2 = p2 * d + 2.0 * p1
            if nder >= 1:
                p1 = p1 * d + p0
            p0 = p0 * d
    c = _INV_DEN_T[W * WMAX + j]
    v = p0 * c
    if u == j:
        v = 1.0
    return v, p1 * c, p2 * c


@numba.njit(cache=True, inline="always")
def node_weights(code, W, j, u, status, nder):
    """Weights of node j (0..W-1) of a stencil placed by :func:`place_uniform` on a uniform axis, in index
    units: ``(value, d/du, d2/du2)``. Exact FD tables, spline polynomials, or Lagrange (also for stencils
    shifted at a wall, where splines become Lagrange of the same width and FD derivatives come from the
    shifted polynomial). Not for ``fd4lag4``, which :func:`axis_weights` handles."""
    if code == NONE:
        return 1.0, 0.0, 0.0
    if code == FD4 or code == FD6 or code == FD8:
        v = 1.0 if j == int(u) else 0.0
        if nder == 0:
            return v, 0.0, 0.0
        if status == 0:
            row = (code - FD4) * WMAX
            return v, _FD1_T[row + j], _FD2_T[row + j]
        _, d1, d2 = lagrange_node(W, j, u, nder)
        return v, d1, d2
    if status == 0 and (code == M1Q4 or code == M2Q8):
        f = u - (W // 2 - 1)
        v = 0.0
        d1 = 0.0
        d2 = 0.0
        deg = 4 if code == M1Q4 else 6
        for q in range(deg - 1, -1, -1):  # Horner, with derivatives
            d2 = d2 * f + 2.0 * d1
            d1 = d1 * f + v
            v = v * f + (_M1Q4_T[j * 4 + q] if code == M1Q4 else _M2Q8_T[j * 6 + q])
        return v, d1, d2
    return lagrange_node(W, j, u, nder)


# ---------------------------------------------------------------------------------------------------------
# Python-level helpers (tests, documentation)
# ---------------------------------------------------------------------------------------------------------
def weights_1d(method: str, x: float, axis, nder: int = 2) -> tuple[int, np.ndarray, int]:
    """Weights of ``method`` at coordinate ``x`` on one :class:`~labservice.storage.metadata.Axis`.

    Returns ``(start, w, status)`` with ``w`` of shape (3, width): value, first and second derivative
    weights over nodes ``start .. start + width - 1``. Uses the kernels' own placement and weights.
    """
    from labservice.storage.metadata import Grid

    grid = Grid(x=axis, y=axis, z=axis)
    arrs = AxisArrays.from_grid(grid)
    code = METHODS[method].code
    width = METHODS[method].width
    w = np.zeros((3, WMAX))
    sc = np.zeros((SCRATCH_ROWS, WMAX + 1))
    start, status = _weights_1d(code, width, float(x), nder, *arrs.as_tuple(), w, sc)
    return int(start), w[:, :width].copy(), int(status)


@numba.njit(cache=True)
def _weights_1d(code, width, x, nder, n, periodic, uniform, x0, dx, period, coords, w, sc):
    """The kernels' per-axis path (placement, then closed form or the general fallback) for one x. On
    stretched axes it takes the general path where the kernels take :func:`lagrange_stretched`, whose
    weights equal it bit for bit (tests/interpolation/test_weights.py)."""
    if uniform[0]:
        start, u, status = place_uniform(code, x, n[0], periodic[0], x0[0], dx[0])
    else:
        _, _, start, status = place(code, 0, x, n, periodic, uniform, x0, dx, period, coords)
    if status == 2:
        return start, status
    if uniform[0] and code != FD4LAG4:
        ih = 1.0 / dx[0]
        for j in range(width):
            v, d1, d2 = node_weights(code, width, j, u, status, nder)
            w[0, j] = v
            w[1, j] = d1 * ih
            w[2, j] = d2 * ih * ih
    elif not (code == FD4LAG4 and uniform[0]
              and fd4lag4_uniform(x, n[0], periodic[0], x0[0], dx[0], nder, w.reshape((1, 3, w.shape[1])), 0)):
        axis_weights(code, 0, x, nder, n, periodic, uniform, x0, dx, period, coords, w, sc)
    return start, status
