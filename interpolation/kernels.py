"""numba kernels of the point engine: placement, bucket sort, and tensor-product evaluation per block.

A request runs in three passes over each batch of points:

1. :func:`sort_keys` (parallel for big batches): per point a wall status and a sort key: the block
   holding the stencil's base node, then the Morton index of a small sub-cube of that block.
2. :func:`bucket_sort`: a counting sort on those keys (one histogram pass and one scatter), so
   neighbouring points are evaluated together and each block's points are one contiguous range; then
   :func:`gather_rows` copies the points into that order, so the evaluation reads them sequentially.
3. The evaluation of one block held as a float64 array (``EVALUATORS[width]`` serially, or
   ``PARALLEL_EVALUATORS[width]`` over tasks of consecutive sorted points): each point's stencil is
   placed again (a few flops, cheaper than storing and re-reading per-point arrays), weights come in
   closed form, and the tensor-product sums are written straight into the caller's order.

The evaluation body is compiled once per stencil width with the width as a constant, so the stencil
loops unroll. Blocks are float64 (converted once when a block is built and cached): converting float32
on every load costs more than the sums. All components are evaluated together, with float64
accumulation. No fastmath: serial and parallel paths, and every block decomposition, give bit-identical
results.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from labservice.interpolation.weights import (
    FD4LAG4,
    LAG4,
    LAG6,
    LAG8,
    LAG_INV_DEN,
    SCRATCH_ROWS,
    TRILINEAR,
    WMAX,
    axis_weights,
    method_offset,
    method_width,
    node_weights,
    place,
    place_uniform,
)

TASK = 1024  # sorted points per parallel task: neighbours stay on one thread, scratch is per task
AHEAD = 8  # the evaluation prefetches the stencil rows of the point this many places ahead


@intrinsic
def prefetch(typingctx, flat, idx):
    """Ask the CPU to start loading ``flat[idx]`` into cache (``llvm.prefetch``: read, keep in all levels).

    Random points miss cache on nearly every stencil row; issuing those loads a few points ahead turns
    the wait for memory into overlapped transfers (about 1.5x for lag4 on random points).
    """

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return numba.types.none(flat, idx), codegen


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
    """Place every point's stencil per axis and give it a sort key; returns the number of points outside.

    The full per-axis placement, for the box filter's node groups and for naming the axis of an
    outside point; point evaluation needs only :func:`sort_keys`.

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
    ntasks = (npts + TASK - 1) // TASK
    bad = np.zeros(ntasks, dtype=np.int64)
    for b in numba.prange(ntasks):
        for p in range(b * TASK, min(npts, (b + 1) * TASK)):
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sort_keys_range(code, points, q0, q1, n, periodic, uniform, x0, dx, period, coords, block, nblocks,
                    sub_bits, sub_shift, keys, status):
    """Sort keys and wall status of the points ``q0 .. q1 - 1``; returns how many lie outside.

    ``keys[p]`` is ``block_id << 3 * sub_bits | morton(sub-cube)``, where the block (edges ``block``
    (x, y, z) nodes, ``nblocks`` per axis, x fastest) holds the stencil's base node and the sub-cube is
    the base node shifted right by ``sub_shift`` per axis. ``status[p]`` is the worst axis status: 0
    interior, 1 stencil shifted at a wall, 2 outside the domain or not finite (key 0).
    """
    off = method_offset(code)
    bad = 0
    for p in range(q0, q1):
        bid = 0
        morton = 0
        worst = 0
        for a in range(2, -1, -1):
            x = points[p, a]
            if uniform[a]:  # (an inlined helper returning either placement was 7x slower)
                s, _, st = place_uniform(code, x, n[a], periodic[a], x0[a], dx[a])
            else:  # binary search over the coordinates (general path)
                _, _, s, st = place(code, a, x, n, periodic, uniform, x0, dx, period, coords)
            if st > worst:
                worst = st
            c = max(s + off, 0)  # in [0, n) by construction (wrapped periodic index, or inside a wall)
            bi = c // block[a]
            bid = bid * nblocks[a] + bi
            morton |= _interleave((c - bi * block[a]) >> sub_shift[a], sub_bits) << a
        status[p] = worst
        if worst == 2:
            bad += 1
            keys[p] = 0
        else:
            keys[p] = (bid << (3 * sub_bits)) | morton
    return bad


@numba.njit(parallel=True, cache=True)
def sort_keys(code, points, n, periodic, uniform, x0, dx, period, coords, block, nblocks, sub_bits, sub_shift,
              keys, status):
    """:func:`sort_keys_range` over all points, in parallel tasks; returns how many lie outside."""
    npts = points.shape[0]
    ntasks = (npts + TASK - 1) // TASK
    bad = np.zeros(ntasks, dtype=np.int64)
    for b in numba.prange(ntasks):
        bad[b] = sort_keys_range(code, points, b * TASK, min(npts, (b + 1) * TASK), n, periodic, uniform, x0,
                                 dx, period, coords, block, nblocks, sub_bits, sub_shift, keys, status)
    return bad.sum()


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def gather_rows(points, order):
    """``points[order]`` for an (N, 3) array, without numpy's fancy-indexing overhead."""
    out = np.empty((order.shape[0], 3))
    for q in range(order.shape[0]):
        p = order[q]
        out[q, 0] = points[p, 0]
        out[q, 1] = points[p, 1]
        out[q, 2] = points[p, 2]
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def stencil_box(code, ps, q0, q1, n, periodic, uniform, x0, dx, period, coords):
    """Bounding box ``(lo, hi)`` (x, y, z; hi exclusive) of the stencils of the points ``ps[q0:q1]``."""
    W = method_width(code)
    lo = np.empty(3, dtype=np.int64)
    hi = np.empty(3, dtype=np.int64)
    for a in range(3):
        lo[a] = n[a] * 4
        hi[a] = -n[a] * 4
    for q in range(q0, q1):
        for a in range(3):
            x = ps[q, a]
            if uniform[a]:
                s, _, _ = place_uniform(code, x, n[a], periodic[a], x0[a], dx[a])
            else:
                _, _, s, _ = place(code, a, x, n, periodic, uniform, x0, dx, period, coords)
            if s < lo[a]:
                lo[a] = s
            if s + W > hi[a]:
                hi[a] = s + W
    return lo, hi


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _evaluate_body(W, code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    """Evaluate the sorted points ``ps[q0:q1]`` on block R (first node ``lo``) into ``out[order[q]]``.

    ``W`` is the stencil width; each caller passes it as a constant so that the stencil loops unroll.
    The loop body calls only scalar functions (weights per node come back as tuples) and indexes arrays
    without slicing them: handing an array to a function costs reference-count updates. ``flat``
    indices are unsigned so numba adds no negative-index checks. Non-uniform axes and ``fd4lag4`` take
    the general :func:`~labservice.interpolation.weights.axis_weights` instead.
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
        fast[a] = uniform[a] != 0 and code != FD4LAG4
        inv_h[a] = 1.0 / dx[a]
    lagrange = code == TRILINEAR or code == LAG4 or code == LAG6 or code == LAG8
    inv_den = np.empty(W)
    for j in range(W):
        inv_den[j] = LAG_INV_DEN[W, j]
    ahead = uniform[0] != 0 and uniform[1] != 0 and uniform[2] != 0  # placement is cheap: prefetch
    last = W * nc - 1  # last element of a stencil row
    for q in range(q0, q1):
        if ahead and q + AHEAD < q1:
            s2 = place_uniform(code, ps[q + AHEAD, 2], n[2], periodic[2], x0[2], dx[2])[0]
            s1 = place_uniform(code, ps[q + AHEAD, 1], n[1], periodic[1], x0[1], dx[1])[0]
            s0 = place_uniform(code, ps[q + AHEAD, 0], n[0], periodic[0], x0[0], dx[0])[0]
            b = (s2 - lo[2]) * sz + (s1 - lo[1]) * sy + (s0 - lo[0]) * nc
            for kz in range(W):
                for ky in range(W):
                    r = b + kz * sz + ky * sy
                    prefetch(flat, r)
                    prefetch(flat, r + last)
        for a in range(3):
            x = ps[q, a]
            if uniform[a]:
                s, uu, status = place_uniform(code, x, n[a], periodic[a], x0[a], dx[a])
            else:
                _, _, s, status = place(code, a, x, n, periodic, uniform, x0, dx, period, coords)
                uu = 0.0
            st[a] = s
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
            else:
                axis_weights(code, a, x, nder, n, periodic, uniform, x0, dx, period, coords, w[a], sc)
        base = (st[2] - lo[2]) * sz + (st[1] - lo[1]) * sy + (st[0] - lo[0]) * nc
        p = order[q]
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
        if nc == 3 and nder == 1:  # velocity gradients: one pass over the stencil for all components
            g00 = 0.0
            g01 = 0.0
            g02 = 0.0
            g10 = 0.0
            g11 = 0.0
            g12 = 0.0
            g20 = 0.0
            g21 = 0.0
            g22 = 0.0
            for kz in range(W):
                for ky in range(W):
                    i = numba.uint64(base + kz * sz + ky * sy)
                    v0 = 0.0  # x-value sums, per component
                    v1 = 0.0
                    v2 = 0.0
                    d0 = 0.0  # x-derivative sums, per component
                    d1 = 0.0
                    d2 = 0.0
                    for kx in range(W):
                        c = w[0, 0, kx]
                        e = w[0, 1, kx]
                        f0 = flat[i]
                        f1 = flat[i + numba.uint64(1)]
                        f2 = flat[i + numba.uint64(2)]
                        v0 += c * f0
                        v1 += c * f1
                        v2 += c * f2
                        d0 += e * f0
                        d1 += e * f1
                        d2 += e * f2
                        i += numba.uint64(3)
                    fzy = w[2, 0, kz] * w[1, 0, ky]
                    fzdy = w[2, 0, kz] * w[1, 1, ky]
                    fdzy = w[2, 1, kz] * w[1, 0, ky]
                    g00 += fzy * d0
                    g01 += fzdy * v0
                    g02 += fdzy * v0
                    g10 += fzy * d1
                    g11 += fzdy * v1
                    g12 += fdzy * v1
                    g20 += fzy * d2
                    g21 += fzdy * v2
                    g22 += fdzy * v2
            out[p, 0, 0] = g00
            out[p, 0, 1] = g01
            out[p, 0, 2] = g02
            out[p, 1, 0] = g10
            out[p, 1, 1] = g11
            out[p, 1, 2] = g12
            out[p, 2, 0] = g20
            out[p, 2, 1] = g21
            out[p, 2, 2] = g22
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


# One serial evaluator per common stencil width, with the width a compile-time constant, and one
# for the rare widths (1, 5, 7, 9). Same arguments as _evaluate_body without W.
@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w2(code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(2, code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w4(code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(4, code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w6(code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(6, code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_w8(code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(8, code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def evaluate_any(code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    _evaluate_body(method_width(code), code, nder, q0, q1, order, ps, R, lo, n, periodic, uniform, x0, dx, period,
                   coords, out)


# Parallel drivers: tasks of TASK consecutive sorted points (neighbours share a thread's cache).
@numba.njit(parallel=True, cache=True)
def evaluate_w2_parallel(code, nder, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    nq = order.shape[0]
    for b in numba.prange((nq + TASK - 1) // TASK):
        evaluate_w2(code, nder, b * TASK, min(nq, (b + 1) * TASK), order, ps, R, lo, n, periodic, uniform, x0, dx,
                    period, coords, out)


@numba.njit(parallel=True, cache=True)
def evaluate_w4_parallel(code, nder, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    nq = order.shape[0]
    for b in numba.prange((nq + TASK - 1) // TASK):
        evaluate_w4(code, nder, b * TASK, min(nq, (b + 1) * TASK), order, ps, R, lo, n, periodic, uniform, x0, dx,
                    period, coords, out)


@numba.njit(parallel=True, cache=True)
def evaluate_w6_parallel(code, nder, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    nq = order.shape[0]
    for b in numba.prange((nq + TASK - 1) // TASK):
        evaluate_w6(code, nder, b * TASK, min(nq, (b + 1) * TASK), order, ps, R, lo, n, periodic, uniform, x0, dx,
                    period, coords, out)


@numba.njit(parallel=True, cache=True)
def evaluate_w8_parallel(code, nder, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    nq = order.shape[0]
    for b in numba.prange((nq + TASK - 1) // TASK):
        evaluate_w8(code, nder, b * TASK, min(nq, (b + 1) * TASK), order, ps, R, lo, n, periodic, uniform, x0, dx,
                    period, coords, out)


@numba.njit(parallel=True, cache=True)
def evaluate_any_parallel(code, nder, order, ps, R, lo, n, periodic, uniform, x0, dx, period, coords, out):
    nq = order.shape[0]
    for b in numba.prange((nq + TASK - 1) // TASK):
        evaluate_any(code, nder, b * TASK, min(nq, (b + 1) * TASK), order, ps, R, lo, n, periodic, uniform, x0,
                     dx, period, coords, out)


# width -> (serial range evaluator, parallel evaluator); other widths use the evaluate_any pair.
EVALUATORS = {
    2: (evaluate_w2, evaluate_w2_parallel),
    4: (evaluate_w4, evaluate_w4_parallel),
    6: (evaluate_w6, evaluate_w6_parallel),
    8: (evaluate_w8, evaluate_w8_parallel),
}
GENERIC_EVALUATOR = (evaluate_any, evaluate_any_parallel)
