"""Box (top-hat) filter of a field and of its gradient at points, via summed-volume tables.

The filtered value at a point is the mean of the W^3 grid values in the cube of W (odd) nodes centred on
the node nearest the point, as JHTDB's GetBoxFilter. The filtered gradient is the FD4 centred derivative
of the filtered field at that node. For each group of neighbouring points the needed region is read once
and turned into a float64 summed-volume table, so each box sum costs eight lookups whatever W is.
"""

from __future__ import annotations

import numba
import numpy as np

from labservice.errors import InvalidInput, OutOfDomain
from labservice.interpolation.engine import PointEvaluator, RegionSource, as_points
from labservice.interpolation.methods import FD_FIRST

MAX_WIDTH = 255
_FD4 = FD_FIRST[0, :5].copy()


@numba.njit(cache=True)
def summed_volume(region):
    """Summed-volume table S (nz+1, ny+1, nx+1, nc): S[z, y, x] = sum of region[:z, :y, :x] (float64)."""
    nz, ny, nx, nc = region.shape
    s = np.zeros((nz + 1, ny + 1, nx + 1, nc))
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                for c in range(nc):
                    s[z + 1, y + 1, x + 1, c] = (
                        region[z, y, x, c] + s[z, y + 1, x + 1, c] + s[z + 1, y, x + 1, c] + s[z + 1, y + 1, x, c]
                        - s[z, y, x + 1, c] - s[z, y + 1, x, c] - s[z + 1, y, x, c] + s[z, y, x, c]
                    )
    return s


@numba.njit(cache=True, inline="always")
def _box(s, x0, y0, z0, x1, y1, z1, c):
    return (s[z1, y1, x1, c] - s[z0, y1, x1, c] - s[z1, y0, x1, c] - s[z1, y1, x0, c]
            + s[z0, y0, x1, c] + s[z0, y1, x0, c] + s[z1, y0, x0, c] - s[z0, y0, x0, c])


@numba.njit(parallel=True, cache=True)
def box_kernel(s, nodes, order, origin, half, gradient, inv_dx, fd, out):
    """Filtered values (out[..., 0]) or gradients (out[..., 0:3]) at ``nodes[order]`` from table ``s``."""
    nc = s.shape[3]
    norm = 1.0 / (2 * half + 1) ** 3
    for q in numba.prange(order.shape[0]):
        p = order[q]
        cx = nodes[p, 0] - origin[0]
        cy = nodes[p, 1] - origin[1]
        cz = nodes[p, 2] - origin[2]
        for c in range(nc):
            if not gradient:
                out[p, c, 0] = norm * _box(s, cx - half, cy - half, cz - half,
                                           cx + half + 1, cy + half + 1, cz + half + 1, c)
                continue
            for a in range(3):
                acc = 0.0
                for k in range(5):
                    if fd[k] == 0.0:
                        continue
                    ox = cx + (k - 2 if a == 0 else 0)
                    oy = cy + (k - 2 if a == 1 else 0)
                    oz = cz + (k - 2 if a == 2 else 0)
                    acc += fd[k] * _box(s, ox - half, oy - half, oz - half, ox + half + 1, oy + half + 1,
                                        oz + half + 1, c)
                out[p, c, a] = acc * norm * inv_dx[a]


def box_filter(source: RegionSource, variable: str, t_index: int, points, width: int,
               gradient: bool = False, block: int = 64) -> np.ndarray:
    """Box-filtered field (N, ncomp) or filtered gradient (N, ncomp, 3) at stored time index ``t_index``.

    Parameters
    ----------
    width : int
        Odd filter width W in grid points (1 gives the nearest-node value).
    gradient : bool
        Return the FD4 gradient of the filtered field (uniform axes only).
    """
    width = int(width)
    if width < 1 or width % 2 == 0 or width > MAX_WIDTH:
        raise InvalidInput(f"filter width must be an odd number of grid points in [1, {MAX_WIDTH}]; got {width}")
    ev = PointEvaluator(source, variable, "none", 0, block=block)
    meta = source.meta
    half = width // 2
    reach = half + (2 if gradient else 0)
    for name in "xyz":
        axis = meta.grid.axis(name)
        if gradient and not axis.uniform:
            raise InvalidInput(f"the filtered gradient needs uniform axes; axis {name} is stretched")
        if axis.periodic and 2 * reach + 1 > axis.size:
            raise InvalidInput(f"filter width {width} is wider than axis {name} ({axis.size} nodes)")
    p = as_points(points)
    out = np.empty((p.shape[0], ev.ncomp, 3 if gradient else 1))
    inv_dx = 1.0 / ev.axes.dx
    for i0 in range(0, p.shape[0], ev.batch):
        pts = p[i0 : i0 + ev.batch]
        nodes, _, order, edges, lo, hi = ev.groups(pts, i0)
        _check_walls(meta, ev.axes, pts, nodes, reach, i0)
        for g in range(lo.shape[0]):
            r0 = lo[g] - reach
            r1 = hi[g] + reach
            region = source.region(variable, t_index, (r0[2], r0[1], r0[0]), (r1[2], r1[1], r1[0]))
            s = summed_volume(region)
            box_kernel(s, nodes, order[edges[g] : edges[g + 1]], r0, half, gradient, inv_dx, _FD4,
                       out[i0 : i0 + ev.batch])
    return out if gradient else out[..., 0]


def _check_walls(meta, axes, pts, nodes, reach, offset) -> None:
    for a, name in enumerate("xyz"):
        if axes.periodic[a]:
            continue
        n = int(axes.n[a])
        bad = np.nonzero((nodes[:, a] - reach < 0) | (nodes[:, a] + reach > n - 1))[0]
        if bad.size:
            i = bad[0]
            raise OutOfDomain(
                f"{bad.size} point(s) are too close to the {name} wall for this filter: point {i + offset} "
                f"({name}={pts[i, a]!r}) needs nodes {nodes[i, a] - reach}..{nodes[i, a] + reach} but axis "
                f"{name} has nodes 0..{n - 1}; use a smaller width or move the points inward",
                indices=[int(j + offset) for j in bad[:100]],
            )
