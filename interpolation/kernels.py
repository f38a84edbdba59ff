"""numba kernels of the point engine: placement, bucket sort, and tensor-product evaluation per block.

A request runs in three passes over each batch of points:

1. :func:`place_points` (parallel): per point and axis the first stencil node, the position relative to
   it (index units on uniform axes), a wall status, and a sort key: the block holding the stencil's base
   node, then the Morton index of a small sub-cube of that block.
2. :func:`bucket_sort`: a counting sort on those keys (one sequential histogram pass and one scatter),
   so neighbouring points are evaluated together and each block's points are one contiguous range.
3. :func:`evaluate` (parallel): for one block held as a float64 array, weights in closed form and the
   tensor-product sums, written straight into the caller's order. Blocks are float64 (converted once
   when a block is built and cached) because converting float32 on every load costs more than the sums.
   All components are evaluated together, with float64 accumulation.
"""

from __future__ import annotations

import numba
import numpy as np

from labservice.interpolation.weights import (
    FD4LAG4,
    LAG4,
    LAG6,
    LAG8,
    LAG_INV_DEN,
    TRILINEAR,
    SCRATCH_ROWS,
    WMAX,
    axis_weights,
    method_offset,
    method_width,
    node_weights,
    place,
    place_uniform,
)

_CHUNK = 256  # points per prange task: per-task scratch is allocated once per task, never per point


@numba.njit(cache=True, inline="always")
def _interleave(v, bits):
    """Spread the low ``bits`` bits of v three apart (one axis of a small Morton index)."""
    out = 0
    for b in range(bits):
        out |= ((v >> b) & 1) << (3 * b)
    return out


@numba.njit(parallel=True, cache=True)
def place_points(code, points, n, periodic, uniform, x0, dx, period, coords, block, nblocks, sub_bits,
                 start, u, status, keys):
    """Place every point's stencil and give it a sort key; returns the number of points outside.

    ``start`` (N, 3) int64, ``u`` (N, 3) float64 and ``status`` (N, 3) int8 are filled per axis (x, y, z)
    as :func:`~labservice.interpolation.weights.place_axis` says. ``keys[p]`` is
    ``block_id << 3 * sub_bits | morton(sub-cube)``, where the block (edges ``block`` (x, y, z) nodes,
    ``nblocks`` per axis, x fastest) holds the node ``start + offset`` and the sub-cube is one of at most
    ``2**sub_bits`` per block edge. Points outside the domain get key 0 and status 2.
    """
    npts = points.shape[0]
    off = method_offset(code)
    sub_shift = np.zeros(3, dtype=np.int64)
    for a in range(3):
        while (block[a] >> sub_shift[a]) > (1 << sub_bits):
            sub_shift[a] += 1
    ntasks = (npts + _CHUNK - 1) // _CHUNK
    bad = np.zeros(ntasks, dtype=np.int64)
    for b in numba.prange(ntasks):
        for p in range(b * _CHUNK, min(npts, (b + 1) * _CHUNK)):
            bid = 0
            morton = 0
            worst = 0
            for a in range(2, -1, -1):
                x = points[p, a]
                if uniform[a]:
                    s, uu, st = place_uniform(code, x, n[a], periodic[a], x0[a], dx[a])
                else:  # binary search over the coordinates (general path)
                    _, _, s, st = place(code, a, x, n, periodic, uniform, x0, dx, period, coords)
                    uu = 0.0
                start[p, a] = s
                u[p, a] = uu
                status[p, a] = st
                if st > worst:
                    worst = st
                c = max(s + off, 0)  # in [0, n) by construction (wrapped periodic index, or inside a wall)
                bi = c // block[a]
                bid = bid * nblocks[a] + bi
                morton |= _interleave((c - bi * block[a]) >> sub_shift[a], sub_bits) << a
            if worst == 2:
                bad[b] += 1
                keys[p] = 0
            else:
                keys[p] = (bid << (3 * sub_bits)) | morton
    return bad.sum()


@numba.njit(cache=True)
def bucket_sort(keys, nbuckets):
    """Stable counting sort of small integer keys: ``(order, first)`` where bucket k holds the points
    ``order[first[k]:first[k + 1]]``."""
    npts = keys.shape[0]
    first = np.zeros(nbuckets + 1, dtype=np.int64)
    for p in range(npts):
        first[keys[p] + 1] += 1
    for k in range(nbuckets):
        first[k + 1] += first[k]
    pos = first[:-1].copy()
    order = np.empty(npts, dtype=np.int64)
    for p in range(npts):
        k = keys[p]
        order[pos[k]] = p
        pos[k] += 1
    return order, first


@numba.njit(cache=True)
def stencil_box(order, start, width):
    """Bounding box ``(lo, hi)`` (x, y, z; hi exclusive) of the stencils of the points ``order``."""
    lo = np.empty(3, dtype=np.int64)
    hi = np.empty(3, dtype=np.int64)
    for a in range(3):
        lo[a] = start[order[0], a]
        hi[a] = lo[a] + width
    for q in range(1, order.shape[0]):
        p = order[q]
        for a in range(3):
            s = start[p, a]
            if s < lo[a]:
                lo[a] = s
            if s + width > hi[a]:
                hi[a] = s + width
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _evaluate_range(code, nder, q0, q1, order, points, start, u, status, R, lo, n, periodic, uniform, x0, dx,
                    period, coords, out):
    """Evaluate the points ``order[q0:q1]`` on block R (whose first node is ``lo``) into ``out``.

    The loop body calls only scalar functions (weights per node come back as tuples) and indexes arrays
    without slicing them: handing an array to a function costs reference-count updates, which were
    the largest cost per point. ``flat`` indices are unsigned so numba adds no negative-index checks.
    Non-uniform axes and ``fd4lag4`` take the general
    :func:`~labservice.interpolation.weights.axis_weights` instead.
    """
    W = method_width(code)
    nz, ny, nx, nc = R.shape
    flat = R.reshape(-1)
    sy = nx * nc
    sz = ny * sy
    w = np.zeros((3, 3, WMAX))  # [axis, derivative, node]
    sc = np.empty((SCRATCH_ROWS, WMAX + 1))
    fast = np.empty(3, dtype=np.bool_)
    inv_h = np.empty(3)
    for a in range(3):
        fast[a] = uniform[a] != 0 and code != FD4LAG4
        inv_h[a] = 1.0 / dx[a]
    lagrange = code == TRILINEAR or code == LAG4 or code == LAG6 or code == LAG8
    inv_den = LAG_INV_DEN[W, :W].copy()
    for q in range(q0, q1):
        p = order[q]
        for a in range(3):
            if fast[a] and nder == 0 and lagrange and status[p, a] == 0:
                # the common case in O(W): prefix and suffix products of (u - k), constant denominators
                uu = u[p, a]
                pre = 1.0
                for j in range(W):
                    w[a, 0, j] = pre
                    pre *= uu - j
                suf = 1.0
                for j in range(W - 1, -1, -1):
                    w[a, 0, j] *= suf * inv_den[j]
                    suf *= uu - j
                if uu == np.floor(uu):  # on a node: exactly 1 and 0
                    for j in range(W):
                        w[a, 0, j] = 0.0
                    w[a, 0, int(uu)] = 1.0
            elif fast[a]:
                ih = inv_h[a]
                for j in range(W):
                    v, d1, d2 = node_weights(code, W, j, u[p, a], status[p, a], nder)
                    w[a, 0, j] = v
                    w[a, 1, j] = d1 * ih
                    w[a, 2, j] = d2 * ih * ih
            else:
                axis_weights(code, a, points[p, a], nder, n, periodic, uniform, x0, dx, period, coords, w[a], sc)
        base = (start[p, 2] - lo[2]) * sz + (start[p, 1] - lo[1]) * sy + (start[p, 0] - lo[0]) * nc
        if nc == 3 and nder == 0:  # velocity values: the three sums stay in registers
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            for kz in range(W):
                for ky in range(W):
                    i = numba.uint64(base + kz * sz + ky * sy)
                    r0 = 0.0
                    r1 = 0.0
                    r2 = 0.0
                    for kx in range(W):
                        c = w[0, 0, kx]
                        r0 += c * flat[i]
                        r1 += c * flat[i + numba.uint64(1)]
                        r2 += c * flat[i + numba.uint64(2)]
                        i += numba.uint64(3)
                    f = w[2, 0, kz] * w[1, 0, ky]
                    a0 += f * r0
                    a1 += f * r1
                    a2 += f * r2
            out[p, 0, 0] = a0
            out[p, 1, 0] = a1
            out[p, 2, 0] = a2
            continue
        for comp in range(nc):
            if nder == 0:
                acc = 0.0
                for kz in range(W):
                    for ky in range(W):
                        i = numba.uint64(base + kz * sz + ky * sy + comp)
                        row = 0.0
                        for kx in range(W):
                            row += w[0, 0, kx] * flat[i]
                            i += numba.uint64(nc)
                        acc += w[2, 0, kz] * w[1, 0, ky] * row
                out[p, comp, 0] = acc
            elif nder == 1:
                gx = 0.0
                gy = 0.0
                gz = 0.0
                for kz in range(W):
                    for ky in range(W):
                        i = numba.uint64(base + kz * sz + ky * sy + comp)
                        r0 = 0.0
                        r1 = 0.0
                        for kx in range(W):
                            v = flat[i]
                            r0 += w[0, 0, kx] * v
                            r1 += w[0, 1, kx] * v
                            i += numba.uint64(nc)
                        gx += w[2, 0, kz] * w[1, 0, ky] * r1
                        gy += w[2, 0, kz] * w[1, 1, ky] * r0
                        gz += w[2, 1, kz] * w[1, 0, ky] * r0
                out[p, comp, 0] = gx
                out[p, comp, 1] = gy
                out[p, comp, 2] = gz
            else:
                hxx = 0.0
                hxy = 0.0
                hxz = 0.0
                hyy = 0.0
                hyz = 0.0
                hzz = 0.0
                for kz in range(W):
                    for ky in range(W):
                        i = numba.uint64(base + kz * sz + ky * sy + comp)
                        r0 = 0.0
                        r1 = 0.0
                        r2 = 0.0
                        for kx in range(W):
                            v = flat[i]
                            r0 += w[0, 0, kx] * v
                            r1 += w[0, 1, kx] * v
                            r2 += w[0, 2, kx] * v
                            i += numba.uint64(nc)
                        hxx += w[2, 0, kz] * w[1, 0, ky] * r2
                        hxy += w[2, 0, kz] * w[1, 1, ky] * r1
                        hxz += w[2, 1, kz] * w[1, 0, ky] * r1
                        hyy += w[2, 0, kz] * w[1, 2, ky] * r0
                        hyz += w[2, 1, kz] * w[1, 1, ky] * r0
                        hzz += w[2, 2, kz] * w[1, 0, ky] * r0
                out[p, comp, 0] = hxx
                out[p, comp, 1] = hxy
                out[p, comp, 2] = hxz
                out[p, comp, 3] = hyy
                out[p, comp, 4] = hyz
                out[p, comp, 5] = hzz


@numba.njit(parallel=True, cache=True)
def evaluate(code, nder, order, points, start, u, status, R, lo, n, periodic, uniform, x0, dx, period, coords,
             out):
    """Evaluate every point ``order[q]`` on block R into ``out[order[q]]`` (N, nc, 1 | 3 | 6).

    R is a float64 C-contiguous block (z, y, x, c) whose node (0, 0, 0) is the global node ``lo``
    (x, y, z). ``nder`` 0 gives the field, 1 the gradient (d/dx, d/dy, d/dz), 2 the six second
    derivatives (xx, xy, xz, yy, yz, zz). Tasks of ``_CHUNK`` consecutive (so neighbouring) points run
    in parallel.
    """
    nq = order.shape[0]
    for b in numba.prange((nq + _CHUNK - 1) // _CHUNK):
        _evaluate_range(code, nder, b * _CHUNK, min(nq, (b + 1) * _CHUNK), order, points, start, u, status, R,
                        lo, n, periodic, uniform, x0, dx, period, coords, out)
