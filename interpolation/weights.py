"""Closed-form one-dimensional interpolation and differentiation weights, computed per point.

Every spatial method is a tensor product of 1-D weight vectors, one per axis. For a coordinate ``x`` on an
axis this module returns the first node index ``start`` of the stencil and three weight vectors over the
nodes ``start .. start + width - 1``: the value weights and the weights of the first and second
derivatives (in physical units). Kernels in :mod:`labservice.interpolation.kernels` contract those vectors
with the stored data; they call :func:`axis_weights` for each point, so nothing is tabulated or quantised.
The method table and exact coefficients are in :mod:`~labservice.interpolation.methods`, the placement of a
coordinate on an axis in :mod:`~labservice.interpolation.placement`; the names callers use are importable
from here too (``METHODS``, ``FD_FIRST``, ``AxisArrays``, ``place``, ...).

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

import numba
import numpy as np

from labservice.interpolation.methods import (
    FD4,
    FD4LAG4,
    FD6,
    FD8,
    FD_FIRST,
    FD_FIRST_T,
    FD_SECOND,
    FD_SECOND_T,
    LAG8,
    LAG_INV_DEN,
    LAG_INV_DEN_T,
    M1Q4,
    M1Q4_COEF,
    M1Q4_T,
    M2Q8,
    M2Q8_COEF,
    M2Q8_T,
    METHODS,
    NONE,
    TRILINEAR,
    WMAX,
    is_nearest,
    method_width,
)
from labservice.interpolation.placement import (
    AxisArrays,
    node_coord,
    place,
    place_uniform,
    uniform_index,
    wrap_coordinate,
)

SCRATCH_ROWS = 13  # rows of the per-thread scratch array axis_weights needs


# ---------------------------------------------------------------------------------------------------------
# numba building blocks
# ---------------------------------------------------------------------------------------------------------
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
    nearest = is_nearest(code)
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
    c = LAG_INV_DEN_T[W * WMAX + j]
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
            return v, FD_FIRST_T[row + j], FD_SECOND_T[row + j]
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
            v = v * f + (M1Q4_T[j * 4 + q] if code == M1Q4 else M2Q8_T[j * 6 + q])
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
