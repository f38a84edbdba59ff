"""numba kernels of the point engine: placement, bucket sort, and tensor-product evaluation per block.

A request runs in four passes over each batch of points:

1. :func:`sort_keys` (parallel for big batches) places every point, once: a wall status, a sort key
   (the block holding the stencil's base node, then the Morton index of a small sub-cube of that block,
   looked up per axis in a table) and a placement record (stencil starts, ``u`` per axis, wall flags).
2. :func:`bucket_sort`: a counting sort on those keys (one histogram pass and one scatter, which
   copies the records into that order, so the evaluation reads them sequentially): neighbouring points
   are evaluated together and each block's points are one contiguous range.
3. The evaluation of one block (float32 as stored, or float64) by ``EVALUATORS[width]`` over a range of
   sorted records (the engine gives a big block's threads contiguous ranges): each point's weights come
   in closed form from its record (every time step of a series reuses it), the stencil rows of the
   point a few places ahead are prefetched, and
   :func:`~labservice.interpolation.simd.contract` does the tensor-product sums as vector
   multiply-adds, writing in the sorted order (sequential stores).
4. :func:`unsort` moves the results back to the caller's order: one tight pass of scattered stores
   (made inside the evaluation loop, the same stores cost several times more).

Each evaluator is compiled for one stencil width with the width as a constant, so the stencil loops
unroll. All components are evaluated together, with float64 accumulation. No fastmath: every split of
the points between threads and blocks gives bit-identical results.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from labservice.interpolation.methods import (
    FD4LAG4,
    LAG4,
    LAG6,
    LAG8,
    LAG_INV_DEN,
    TRILINEAR,
    WMAX,
    method_offset,
    method_width,
)
from labservice.interpolation.placement import place, place_uniform
from labservice.interpolation.simd import contract
from labservice.interpolation.weights import (
    SCRATCH_ROWS,
    axis_weights,
    fd4lag4_uniform,
    lagrange_stretched,
    node_weights,
)

TASK = 1024  # points per parallel task of the placement kernels
# Placement records pack three stencil starts in one int64, 21 bits each: axes of up to MAX_AXIS_NODES.
RECORD = 4  # float64 words per point of a placement record (sort_keys_range)
START_BIAS = 16  # starts run from -4 (a periodic stencil before node 0) to n - 1
START_MASK = (1 << 21) - 1
MAX_AXIS_NODES = START_MASK - START_BIAS
AHEAD = 8  # the evaluation prefetches the stencil rows of the point this many places ahead
STORES_AHEAD = 16  # the scatters fetch the line of the store this many elements ahead


def _prefetch_intrinsic(name: str, write: int, doc: str):
    """An intrinsic ``name(a, idx)`` hinting the CPU to fetch element ``idx`` of the C-contiguous array
    ``a``, counted flat whatever its dimensions (``llvm.prefetch``; a hint never faults)."""

    def fetch(typingctx, a, idx):
        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
            # (address, write?, locality 3: keep in every cache level, data cache)
            builder.call(fn, [ptr, ir.Constant(i32, write), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return numba.types.none(a, idx), codegen

    fetch.__name__ = fetch.__qualname__ = name
    fetch.__doc__ = doc
    return intrinsic(fetch)


prefetch = _prefetch_intrinsic("prefetch", 0, """Start loading ``a[idx]`` (flat index) into cache.

Random points miss cache on nearly every stencil row; issuing those loads a few points ahead turns
the wait for memory into overlapped transfers (about 1.5x for lag4 on random points).""")
prefetch_write = _prefetch_intrinsic("prefetch_write", 1, """Start loading ``a[idx]`` (flat index), a line about to be written.

The scattered stores of the sort and of the unsort each miss cache; fetching their lines
:data:`STORES_AHEAD` elements ahead overlaps the misses (about 1.3x on both).""")


@numba.njit(parallel=True, cache=True)
def place_points(code, points, n, periodic, uniform, x0, dx, period, coords, start, u, status):
    """Place every point's stencil per axis: the full per-axis placement, for the box filter's node groups
    and for naming the axis of an outside point (point evaluation needs only :func:`sort_keys`).

    ``start`` (N, 3) int64, ``u`` (N, 3) float64 and ``status`` (N, 3) int8 are filled per axis (x, y, z)
    as :func:`~labservice.interpolation.placement.place` says (status 2: outside the domain).
    """
    npts = points.shape[0]
    for b in numba.prange((npts + TASK - 1) // TASK):
        for p in range(b * TASK, min(npts, (b + 1) * TASK)):
            for a in range(3):
                x = points[p, a]
                if uniform[a]:
                    s, uu, st = place_uniform(code, x, n[a], periodic[a], x0[a], dx[a])
                else:  # binary search over the coordinates (general path)
                    _, _, s, st = place(code, a, x, n, periodic, uniform, x0, dx, period, coords)
                    uu = 0.0
                start[p, a] = s
                u[p, a] = uu
                status[p, a] = st


@numba.njit(cache=True, inline="always")
def keeps_u(code, uniform_axis):
    """Whether the evaluation weights an axis from ``u`` (closed forms on a uniform axis) rather than from
    the coordinate itself (stretched axes go through ``axis_weights``; ``fd4lag4`` through
    ``fd4lag4_uniform``, or ``axis_weights`` at a wall)."""
    return uniform_axis != 0 and code != FD4LAG4


@numba.njit(cache=True, inline="always")
def record_starts(reci, q):
    """Unpack the stencil starts (x, y, z) of record ``q`` (see :func:`sort_keys_range`)."""
    v = reci[q, 3]
    return (v & START_MASK) - START_BIAS, ((v >> 21) & START_MASK) - START_BIAS, (v >> 42) - START_BIAS


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sort_keys_range(code, points, q0, q1, n, periodic, uniform, x0, dx, period, coords, table, keys, status, rec,
                    reci):
    """:func:`_sort_keys_body`, compiled with the method a constant for the Lagrange methods (LLVM then
    drops the method tests of every placement: about 1.3x)."""
    if code == LAG4:
        return _sort_keys_body(LAG4, points, q0, q1, n, periodic, uniform, x0, dx, period, coords, table, keys,
                               status, rec, reci)
    if code == LAG6:
        return _sort_keys_body(LAG6, points, q0, q1, n, periodic, uniform, x0, dx, period, coords, table, keys,
                               status, rec, reci)
    if code == LAG8:
        return _sort_keys_body(LAG8, points, q0, q1, n, periodic, uniform, x0, dx, period, coords, table, keys,
                               status, rec, reci)
    return _sort_keys_body(code, points, q0, q1, n, periodic, uniform, x0, dx, period, coords, table, keys, status,
                           rec, reci)


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _sort_keys_body(code, points, q0, q1, n, periodic, uniform, x0, dx, period, coords, table, keys, status, rec,
                    reci):
    """Sort keys, wall status and placement records of the points ``q0 .. q1 - 1``; returns how many lie
    outside.

    ``keys[p]`` is ``table[0, cx] + table[1, cy] + table[2, cz]`` for the stencil's base node (cx, cy,
    cz): :meth:`~labservice.interpolation.blocks.BlockLayout.key_table` puts the block id and the Morton
    index of a sub-cube of the block in disjoint bits. ``status[p]`` is the worst axis status: 0
    interior, 1 stencil shifted at a wall, 2 outside the domain or not finite (key 0).

    The placement is kept for the evaluation, so each point is placed once per request: ``rec`` (N, 4)
    float64 and ``reci``, an int64 view of the same memory. ``rec[p, a]`` is ``u`` on axes the kernels
    weight from it (:func:`keeps_u`; ``u >= 0`` there, and a set sign bit says the stencil was shifted at
    a wall), else the coordinate. ``reci[p, 3]`` packs the three stencil starts, 21 bits each (offset by
    :data:`START_BIAS`; unpacked by :func:`record_starts`), hence :data:`MAX_AXIS_NODES`.
    """
    off = method_offset(code)
    bad = 0
    for p in range(q0, q1):
        key = 0
        worst = 0
        sx = sy = sz = 0
        c0 = c1 = c2 = 0.0
        for a in range(3):
            x = points[p, a]
            if uniform[a]:  # (an inlined helper returning either placement was 7x slower)
                s, uu, st = place_uniform(code, x, n[a], periodic[a], x0[a], dx[a])
            else:  # binary search over the coordinates (general path)
                _, _, s, st = place(code, a, x, n, periodic, uniform, x0, dx, period, coords)
                uu = 0.0
            if st > worst:
                worst = st
            key += table[a, max(s + off, 0)]  # in [0, n) (wrapped periodic index, or inside a wall)
            c = x
            if keeps_u(code, uniform[a]):
                c = -uu if st == 1 else uu  # (-0.0 too has its sign bit set)
            if a == 0:
                sx, c0 = s, c
            elif a == 1:
                sy, c1 = s, c
            else:
                sz, c2 = s, c
        # stores last: numba's arrays may alias, so a store between the reads above forces reloads
        rec[p, 0] = c0
        rec[p, 1] = c1
        rec[p, 2] = c2
        reci[p, 3] = (sx + START_BIAS) | ((sy + START_BIAS) << 21) | ((sz + START_BIAS) << 42)
        status[p] = worst
        if worst == 2:
            bad += 1
            keys[p] = 0
        else:
            keys[p] = key
    return bad


@numba.njit(parallel=True, cache=True)
def sort_keys(code, points, n, periodic, uniform, x0, dx, period, coords, table, keys, status, rec, reci):
    """:func:`sort_keys_range` over all points, in parallel tasks; returns how many lie outside."""
    npts = points.shape[0]
    ntasks = (npts + TASK - 1) // TASK
    bad = np.zeros(ntasks, dtype=np.int64)
    for b in numba.prange(ntasks):
        bad[b] = sort_keys_range(code, points, b * TASK, min(npts, (b + 1) * TASK), n, periodic, uniform, x0, dx,
                                 period, coords, table, keys, status, rec, reci)
    return bad.sum()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _scatter(keys, records, q0, q1, pos, order, out):
    """Move the 4-word records ``q0 .. q1 - 1`` to their places: ``pos[k]`` is the next free place of
    bucket k."""
    for p in range(q0, q1):
        if p + STORES_AHEAD < q1:  # (the bucket's place may move on by then: still the same line, mostly)
            i = pos[keys[p + STORES_AHEAD]]
            prefetch_write(out, i * RECORD)
            prefetch_write(order, i)
        k = keys[p]
        i = pos[k]
        pos[k] = i + 1
        order[i] = p
        out[i, 0] = records[p, 0]
        out[i, 1] = records[p, 1]
        out[i, 2] = records[p, 2]
        out[i, 3] = records[p, 3]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def bucket_sort(keys, records, nbuckets, order, out):
    """Stable counting sort of placement records (N, 4) int64 by small integer keys into ``order`` (N,)
    and ``out`` (N, 4): ``out[q] == records[order[q]]``; returns ``first``: bucket k holds
    ``order[first[k]:first[k + 1]]``.
    (The caller allocates the big arrays: numpy asks for huge pages, numba's allocator does not.)"""
    npts = keys.shape[0]
    first = np.zeros(nbuckets + 1, dtype=np.int64)
    for p in range(npts):
        first[keys[p] + 1] += 1
    for k in range(nbuckets):
        first[k + 1] += first[k]
    _scatter(keys, records, 0, npts, first[:-1].copy(), order, out)
    return first


@numba.njit(parallel=True, cache=True)
def bucket_sort_parallel(keys, records, nbuckets, nchunks, order, out):
    """:func:`bucket_sort` in ``nchunks`` parallel chunks of points (a histogram each, then a scatter
    each into its own places of every bucket: still stable)."""
    npts = keys.shape[0]
    step = (npts + nchunks - 1) // nchunks
    pos = np.zeros((nchunks, nbuckets), dtype=np.int64)
    for c in numba.prange(nchunks):
        for p in range(c * step, min(npts, (c + 1) * step)):
            pos[c, keys[p]] += 1
    first = np.empty(nbuckets + 1, dtype=np.int64)
    running = 0
    for k in range(nbuckets):  # chunk c's first place in bucket k follows every earlier chunk's share
        first[k] = running
        for c in range(nchunks):
            count = pos[c, k]
            pos[c, k] = running
            running += count
    first[nbuckets] = running
    for c in numba.prange(nchunks):
        _scatter(keys, records, c * step, min(npts, (c + 1) * step), pos[c], order, out)
    return first


@numba.njit(cache=True, nogil=True, error_model="numpy")
def unsort(order, src, dst, q0, q1):
    """``dst[order[q]] = src[q]`` for q in ``q0 .. q1 - 1`` (rows of 2-D arrays)."""
    m = src.shape[1]
    for q in range(q0, q1):
        if q + STORES_AHEAD < q1:
            p = order[q + STORES_AHEAD] * m
            prefetch_write(dst, p)
            prefetch_write(dst, p + m - 1)
        p = order[q]
        for c in range(m):
            dst[p, c] = src[q, c]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def unsort_add(order, src, weight, dst, q0, q1):
    """``dst[order[q]] += weight * src[q]`` for q in ``q0 .. q1 - 1`` (rows of 2-D arrays)."""
    m = src.shape[1]
    for q in range(q0, q1):
        if q + STORES_AHEAD < q1:
            p = order[q + STORES_AHEAD] * m
            prefetch_write(dst, p)
            prefetch_write(dst, p + m - 1)
        p = order[q]
        for c in range(m):
            dst[p, c] += weight * src[q, c]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def stencil_box(code, reci, q0, q1):
    """Bounding box ``(lo, hi)`` (x, y, z; hi exclusive) of the stencils of the sorted records
    ``q0 .. q1 - 1`` (``reci``: the int64 view of a placement record array)."""
    W = method_width(code)
    lo = np.full(3, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(3, np.iinfo(np.int64).min, dtype=np.int64)
    for q in range(q0, q1):
        sx, sy, sz = record_starts(reci, q)
        lo[0] = min(lo[0], sx)
        lo[1] = min(lo[1], sy)
        lo[2] = min(lo[2], sz)
        hi[0] = max(hi[0], sx + W)
        hi[1] = max(hi[1], sy + W)
        hi[2] = max(hi[2], sz + W)
    return lo, hi


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _evaluate_body(W, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    """Evaluate the sorted placement records ``q0 .. q1 - 1`` (``rec`` and its int64 view ``reci``, see
    :func:`sort_keys_range`) on block R (first node ``lo``) into ``out[q0:q1]``.

    ``W`` is the stencil width; each caller passes it as a constant so that the stencil loops unroll.
    The loop body calls only scalar functions (weights per node come back as tuples) and indexes arrays
    without slicing them: handing an array to a function costs reference-count updates. Lagrange
    methods on stretched axes take :func:`~labservice.interpolation.weights.lagrange_stretched` (from the
    kept stencil start), interior ``fd4lag4`` stencils on uniform axes the closed form
    :func:`~labservice.interpolation.weights.fd4lag4_uniform`, and the rest (splines and FD on
    stretched axes, ``fd4lag4`` at walls) the general :func:`~labservice.interpolation.weights.axis_weights`.
    """
    nz, ny, nx, nc = R.shape
    flat = R.reshape(-1)
    sy = nx * nc
    sz = ny * sy
    w = np.zeros((3, 3, WMAX))  # [axis, derivative, node]
    sc = np.empty((SCRATCH_ROWS, WMAX + 1))
    st = np.empty(3, dtype=np.int64)
    fast = np.empty(3, dtype=np.bool_)
    inv_h = np.empty(3)
    for a in range(3):
        fast[a] = keeps_u(code, uniform[a])
        inv_h[a] = 1.0 / dx[a]
    lagrange = code == TRILINEAR or code == LAG4 or code == LAG6 or code == LAG8
    inv_den = np.empty(W)
    for j in range(W):
        inv_den[j] = LAG_INV_DEN[W, j]
    last = W * nc - 1  # last element of a stencil row
    for q in range(q0, q1):
        if q + AHEAD < q1:  # the stencil rows of a point ahead, from its kept placement
            ax, ay, az = record_starts(reci, q + AHEAD)
            b = (az - lo[2]) * sz + (ay - lo[1]) * sy + (ax - lo[0]) * nc
            for kz in range(W):
                for ky in range(W):
                    r = b + kz * sz + ky * sy
                    prefetch(flat, r)
                    prefetch(flat, r + last)
        st[0], st[1], st[2] = record_starts(reci, q)
        for a in range(3):
            x = rec[q, a]  # u, or the coordinate itself (see keeps_u)
            status = 1 if math.copysign(1.0, x) < 0.0 else 0  # on u axes: shifted at a wall
            uu = abs(x)
            if fast[a] and nder == 0 and lagrange and status == 0:
                # the common case in O(W): prefix and suffix products of (u - k), constant denominators
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
                    v, d1, d2 = node_weights(code, W, j, uu, status, nder)
                    w[a, 0, j] = v
                    w[a, 1, j] = d1 * ih
                    w[a, 2, j] = d2 * ih * ih
            elif lagrange and not uniform[a]:
                lagrange_stretched(code, a, x, st[a], nder, n, periodic, uniform, x0, dx, period, coords, w, sc)
            elif not (code == FD4LAG4 and uniform[a]
                      and fd4lag4_uniform(x, n[a], periodic[a], x0[a], dx[a], nder, w, a)):
                axis_weights(code, a, x, nder, n, periodic, uniform, x0, dx, period, coords, w[a], sc)
        base = (st[2] - lo[2]) * sz + (st[1] - lo[1]) * sy + (st[0] - lo[0]) * nc
        # nc and nder as literals per branch: each call unrolls into vector multiply-adds over whole rows
        if nc == 3:
            if nder == 0:
                contract(flat, base, sz, sy, w, out, q, W, 3, 0)
            elif nder == 1:
                contract(flat, base, sz, sy, w, out, q, W, 3, 1)
            else:
                contract(flat, base, sz, sy, w, out, q, W, 3, 2)
        elif nc == 1:
            if nder == 0:
                contract(flat, base, sz, sy, w, out, q, W, 1, 0)
            elif nder == 1:
                contract(flat, base, sz, sy, w, out, q, W, 1, 1)
            else:
                contract(flat, base, sz, sy, w, out, q, W, 1, 2)
        else:
            contract(flat, base, sz, sy, w, out, q, W, nc, nder)


# One evaluator per stencil width, the width a compile-time constant so that the stencil loops unroll
# and the sums vectorise (a runtime width would leave contract() its loop version). Same arguments as
# _evaluate_body without W. The Lagrange field of each width also gets the method and the derivative
# order as constants: LLVM then drops the per-point method tests (about 10 % of the loop's time).
@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w1(code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(1, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w2(code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    if code == TRILINEAR and nder == 0:  # the common case, with the method a constant too
        _evaluate_body(2, TRILINEAR, 0, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)
    else:
        _evaluate_body(2, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w4(code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    if code == LAG4 and nder == 0:  # the common case, with the method a constant too
        _evaluate_body(4, LAG4, 0, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)
    else:
        _evaluate_body(4, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w5(code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(5, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w6(code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    if code == LAG6 and nder == 0:  # the common case, with the method a constant too
        _evaluate_body(6, LAG6, 0, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)
    else:
        _evaluate_body(6, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w7(code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(7, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w8(code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    if code == LAG8 and nder == 0:  # the common case, with the method a constant too
        _evaluate_body(8, LAG8, 0, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)
    else:
        _evaluate_body(8, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w9(code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(9, code, nder, q0, q1, rec, reci, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


# stencil width -> its evaluator; each releases the GIL, so threads can run it on disjoint point ranges
EVALUATORS = {1: evaluate_w1, 2: evaluate_w2, 4: evaluate_w4, 5: evaluate_w5, 6: evaluate_w6, 7: evaluate_w7, 8: evaluate_w8, 9: evaluate_w9}
