"""Where a coordinate falls on one axis: its cell or nearest node, the stencil start, and whether it is
inside, shifted at a wall or outside. The weights (:mod:`labservice.interpolation.weights`) start from it.

Two paths with the same rules (snapping, wrapping, wall shifts): :func:`place` for any axis (arrays of all
three axes, binary search on stretched ones) and :func:`place_uniform` for one uniform axis, scalars only,
on the kernels' hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from labservice.interpolation.methods import is_nearest, method_offset, method_width

# Points closer than this (in cells) to a node on a uniform axis are put on the node, so that node
# coordinates computed as x0 + i*dx reproduce stored values exactly despite round-off in x/dx.
SNAP = 1e-10

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
def base_node(t, nearest, nn, periodic):
    """The stencil's base node at index position t on a uniform axis: the nearest node (wrapped on a
    periodic axis), or the cell's lower node (the last cell's on a non-periodic axis)."""
    if nearest:
        i = int(np.floor(t + 0.5))
        if periodic and i >= nn:
            i -= nn
        return i
    i = int(np.floor(t))
    if not periodic and i >= nn - 1:
        i = nn - 2 if nn >= 2 else 0
    return i


@numba.njit(cache=True, inline="always")
def stencil_start(code, i, nn, periodic):
    """First stencil node of method ``code`` around base node i, shifted inside a non-periodic axis of
    nn nodes: ``(start, status)``, status 1 when shifted at a wall, else 0."""
    start = i - method_offset(code)
    if not periodic:
        width = method_width(code)
        if start < 0:
            return 0, 1
        if start + width > nn:
            return nn - width, 1
    return start, 0


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
        t, inside = uniform_index(x, nn, periodic[a], x0[a], dx[a])
        if not inside:
            return 0, t, 2
        return base_node(t, nearest, nn, periodic[a]), t, 0
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
    i, t, status = locate(a, x, is_nearest(code), n, periodic, uniform, x0, dx, period, coords)
    if status == 2:
        return i, t, 0, 2
    start, status = stencil_start(code, i, n[a], periodic[a])
    return i, t, start, status


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
    nearest = is_nearest(code)
    i = base_node(t, nearest, nn, periodic)
    start, status = stencil_start(code, i, nn, periodic)
    u = float(i - start) if nearest else t - start
    return start, u, status
