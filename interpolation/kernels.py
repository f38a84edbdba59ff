"""numba kernels: stencil placement and tensor-product evaluation over batches of points.

Data come in as one float32 region ``(nz, ny, nx, nc)`` whose node (0, 0, 0) is the global node ``lo``
(x, y, z order, possibly negative on periodic axes). All components are evaluated together and sums are
accumulated in float64. Points are processed in blocks of ``_BLOCK`` inside ``prange`` so each thread
allocates its scratch space once per block, never per point.
"""

from __future__ import annotations

import numba
import numpy as np

from labservice.interpolation.weights import SCRATCH_ROWS, WMAX, axis_weights, method_width, place

_BLOCK = 512


@numba.njit(parallel=True, cache=True)
def place_stencils(code, points, n, periodic, uniform, x0, dx, period, coords, starts, status):
    """First stencil node per point and axis (``starts`` (N, 3), x y z) and status (0, 1 clipped, 2 outside)."""
    npts = points.shape[0]
    nblocks = (npts + _BLOCK - 1) // _BLOCK
    for b in numba.prange(nblocks):
        for p in range(b * _BLOCK, min(npts, (b + 1) * _BLOCK)):
            for a in range(3):
                _, _, s, st = place(code, a, points[p, a], n, periodic, uniform, x0, dx, period, coords)
                starts[p, a] = s
                status[p, a] = st


@numba.njit(parallel=True, cache=True)
def evaluate(code, nder, points, order, lo, region, n, periodic, uniform, x0, dx, period, coords, out):
    """Evaluate the stencil of every point ``order[q]`` on ``region`` into ``out[order[q]]``.

    ``nder`` 0 gives the field (``out[..., 0]``), 1 the gradient (d/dx, d/dy, d/dz), 2 the six second
    derivatives (xx, xy, xz, yy, yz, zz). ``out`` has shape (N, nc, 1 | 3 | 6).
    """
    width = method_width(code)
    nc = region.shape[3]
    nq = order.shape[0]
    nblocks = (nq + _BLOCK - 1) // _BLOCK
    for b in numba.prange(nblocks):
        wx = np.empty((3, WMAX))
        wy = np.empty((3, WMAX))
        wz = np.empty((3, WMAX))
        sc = np.empty((SCRATCH_ROWS, WMAX + 1))
        row = np.empty((3, nc))
        acc = np.empty((nc, 6))
        for q in range(b * _BLOCK, min(nq, (b + 1) * _BLOCK)):
            p = order[q]
            sx, _ = axis_weights(code, 0, points[p, 0], nder, n, periodic, uniform, x0, dx, period, coords, wx, sc)
            sy, _ = axis_weights(code, 1, points[p, 1], nder, n, periodic, uniform, x0, dx, period, coords, wy, sc)
            sz, _ = axis_weights(code, 2, points[p, 2], nder, n, periodic, uniform, x0, dx, period, coords, wz, sc)
            ox = sx - lo[0]
            oy = sy - lo[1]
            oz = sz - lo[2]
            acc[:, :] = 0.0
            if nder == 0:
                for kz in range(width):
                    cz = wz[0, kz]
                    if cz == 0.0:
                        continue
                    for ky in range(width):
                        a00 = cz * wy[0, ky]
                        if a00 == 0.0:
                            continue
                        for c in range(nc):
                            row[0, c] = 0.0
                        for kx in range(width):
                            cx = wx[0, kx]
                            for c in range(nc):
                                row[0, c] += cx * region[oz + kz, oy + ky, ox + kx, c]
                        for c in range(nc):
                            acc[c, 0] += a00 * row[0, c]
                for c in range(nc):
                    out[p, c, 0] = acc[c, 0]
            elif nder == 1:
                for kz in range(width):
                    for ky in range(width):
                        a00 = wz[0, kz] * wy[0, ky]
                        a01 = wz[0, kz] * wy[1, ky]  # d/dy
                        a10 = wz[1, kz] * wy[0, ky]  # d/dz
                        if a00 == 0.0 and a01 == 0.0 and a10 == 0.0:
                            continue
                        for c in range(nc):
                            row[0, c] = 0.0
                            row[1, c] = 0.0
                        for kx in range(width):
                            c0 = wx[0, kx]
                            c1 = wx[1, kx]
                            for c in range(nc):
                                v = region[oz + kz, oy + ky, ox + kx, c]
                                row[0, c] += c0 * v
                                row[1, c] += c1 * v
                        for c in range(nc):
                            acc[c, 0] += a00 * row[1, c]
                            acc[c, 1] += a01 * row[0, c]
                            acc[c, 2] += a10 * row[0, c]
                for c in range(nc):
                    for j in range(3):
                        out[p, c, j] = acc[c, j]
            else:
                for kz in range(width):
                    for ky in range(width):
                        a00 = wz[0, kz] * wy[0, ky]
                        a01 = wz[0, kz] * wy[1, ky]
                        a10 = wz[1, kz] * wy[0, ky]
                        a02 = wz[0, kz] * wy[2, ky]
                        a11 = wz[1, kz] * wy[1, ky]
                        a20 = wz[2, kz] * wy[0, ky]
                        if a00 == 0.0 and a01 == 0.0 and a10 == 0.0 and a02 == 0.0 and a11 == 0.0 and a20 == 0.0:
                            continue
                        for c in range(nc):
                            row[0, c] = 0.0
                            row[1, c] = 0.0
                            row[2, c] = 0.0
                        for kx in range(width):
                            c0 = wx[0, kx]
                            c1 = wx[1, kx]
                            c2 = wx[2, kx]
                            for c in range(nc):
                                v = region[oz + kz, oy + ky, ox + kx, c]
                                row[0, c] += c0 * v
                                row[1, c] += c1 * v
                                row[2, c] += c2 * v
                        for c in range(nc):
                            acc[c, 0] += a00 * row[2, c]  # xx
                            acc[c, 1] += a01 * row[1, c]  # xy
                            acc[c, 2] += a10 * row[1, c]  # xz
                            acc[c, 3] += a02 * row[0, c]  # yy
                            acc[c, 4] += a11 * row[0, c]  # yz
                            acc[c, 5] += a20 * row[0, c]  # zz
                for c in range(nc):
                    for j in range(6):
                        out[p, c, j] = acc[c, j]


@numba.njit(cache=True)
def spread_bits(v):
    """Spread the low 21 bits of v so that two zero bits separate each (Morton interleaving)."""
    v = v & 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    v = (v | (v << 2)) & 0x1249249249249249
    return v


@numba.njit(cache=True)
def chunk_keys(starts, shift, n, periodic, chunk, keys):
    """Morton key of the chunk holding each stencil's centre node (wrapped on periodic axes)."""
    for p in range(starts.shape[0]):
        key = np.uint64(0)
        for a in range(3):
            j = starts[p, a] + shift[a]
            if periodic[a]:
                j = j % n[a]
            else:
                j = min(max(j, 0), n[a] - 1)
            key |= np.uint64(spread_bits(np.uint64(j // chunk[a]))) << np.uint64(a)
        keys[p] = key


@numba.njit(cache=True)
def radix_argsort(keys, nbits):
    """Stable LSD radix argsort of uint64 keys that fit in ``nbits`` bits (8 bits per pass)."""
    npts = keys.shape[0]
    order = np.arange(npts)
    tmp = np.empty(npts, dtype=np.int64)
    count = np.empty(257, dtype=np.int64)
    shift = 0
    while shift < nbits:
        count[:] = 0
        for q in range(npts):
            d = (keys[order[q]] >> np.uint64(shift)) & np.uint64(255)
            count[d + 1] += 1
        for d in range(256):
            count[d + 1] += count[d]
        for q in range(npts):
            d = (keys[order[q]] >> np.uint64(shift)) & np.uint64(255)
            tmp[count[d]] = order[q]
            count[d] += 1
        order, tmp = tmp, order
        shift += 8
    return order


@numba.njit(cache=True)
def group_bounds(order, starts, keys, group_shift, width):
    """Split sorted points into runs sharing ``keys >> group_shift`` and give each run's stencil box.

    Returns ``(edges, lo, hi)``: run r covers ``order[edges[r]:edges[r+1]]``; its stencils lie in nodes
    ``lo[r] .. hi[r] - 1`` (x, y, z).
    """
    npts = order.shape[0]
    edges = np.empty(npts + 1, dtype=np.int64)
    lo = np.empty((npts, 3), dtype=np.int64)
    hi = np.empty((npts, 3), dtype=np.int64)
    ng = 0
    gshift = np.uint64(group_shift)
    for q in range(npts):
        p = order[q]
        if q == 0 or (keys[p] >> gshift) != (keys[order[q - 1]] >> gshift):
            edges[ng] = q
            for a in range(3):
                lo[ng, a] = starts[p, a]
                hi[ng, a] = starts[p, a] + width
            ng += 1
        else:
            for a in range(3):
                lo[ng - 1, a] = min(lo[ng - 1, a], starts[p, a])
                hi[ng - 1, a] = max(hi[ng - 1, a], starts[p, a] + width)
    edges[ng] = npts
    return edges[: ng + 1].copy(), lo[:ng].copy(), hi[:ng].copy()
