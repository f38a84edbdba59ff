"""The tensor-product contraction of one point's stencil, as explicit SIMD.

Every spatial method gives, per point and axis, weight vectors ``w[axis, derivative, node]``; an output
(a value, a gradient or Hessian component) is the sum over the ``W^3`` stencil nodes of the product of
one weight per axis with the stored value. Rows along x hold ``W * nc`` contiguous values (x, then
components), so per output the sum is

    plane(kz) = sum_{ky} wy[ky] * row(kz, ky)                     (a vector of W * nc sums)
    acc = sum_{kz} wz[kz] * plane(kz)
    out[comp] = sum_{kx} wx[kx] * acc[kx * nc + comp]

numba leaves LLVM's SLP vectoriser off, so written as loops these sums run one element at a time.
:func:`contract` emits them as fully unrolled vector multiply-adds over whole rows (``<W*nc x double>``,
split by LLVM into the machine's registers, float32 rows widened on load); the x sum takes all
components at once, even and odd nodes in two chains. Planes are shared by the outputs with the same
y derivative order (a Hessian needs 3 per z plane, not 6), and the chains of dependent multiply-adds
are W long instead of W^2. The summation order is fixed, so results do not depend on how points are
split between threads.

numba's on-disk cache keys a kernel on its own file only: after editing this file, delete the cached
kernels (``interpolation/__pycache__/*.nb[ic]``), or the old sums stay compiled into kernels.py's cache.

When ``W``, ``nc`` or ``nder`` is not a compile-time constant (the kernels make
them constants for 1 and 3 components), or a row is wider than :data:`MAX_ROW`, the same sums run as
plain loops.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

MAX_ROW = 32  # widest row (W * nc) unrolled as vectors; wider rows take the loop

# Derivative order along (z, y, x) of each output column, per derivative order nder: the value; the
# gradient (x, y, z); the Hessian (xx, xy, xz, yy, yz, zz).
OUTPUTS = (
    ((0, 0, 0),),
    ((0, 0, 1), (0, 1, 0), (1, 0, 0)),
    ((0, 0, 2), (0, 1, 1), (1, 0, 1), (0, 2, 0), (1, 1, 0), (2, 0, 0)),
)
OUT_DZ, OUT_DY, OUT_DX = (  # the same as (nder, output) arrays, for the loop version
    np.array([[o[a] for o in outs] + [0] * (6 - len(outs)) for outs in OUTPUTS], dtype=np.int64) for a in range(3)
)


def contract(flat, base, sz, sy, w, out, p, W, NC, NDER):
    """Write the outputs of one point into ``out[p, comp, o]``.

    ``flat`` is the block as a 1-D float32 or float64 array, ``base`` the index of the stencil's first
    value, ``sz`` and ``sy`` the z and y strides in elements, ``w`` the (3, 3, >= W) float64 weights
    ``[axis (x, y, z), derivative, node]`` and ``out`` (N, NC, outputs) float64. Compiled code only.
    """
    raise NotImplementedError("contract is called from numba-compiled code only")


def _literals(*ts):
    return all(isinstance(t, types.IntegerLiteral) for t in ts)


@intrinsic
def _vector_contract(typingctx, flat, base, sz, sy, w, out, p, W, NC, NDER):
    if not _literals(W, NC, NDER):
        return None  # numba retries with the literal types
    width, nc, nder = (t.literal_value for t in (W, NC, NDER))
    m = width * nc
    outputs = OUTPUTS[nder]

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        w_ary = context.make_array(sig.args[4])(context, builder, args[4])
        out_ary = context.make_array(sig.args[5])(context, builder, args[5])
        base_v, sz_v, sy_v, p_v = args[1], args[2], args[3], args[6]
        i32, i64, dbl = ir.IntType(32), ir.IntType(64), ir.DoubleType()
        elem = context.get_data_type(sig.args[0].dtype)
        vec = ir.VectorType(dbl, m)
        undef_m = ir.Constant(vec, ir.Undefined)
        w_shape = cgutils.unpack_tuple(builder, w_ary.shape, 3)
        w_strides = cgutils.unpack_tuple(builder, w_ary.strides, 3)
        loaded = {}

        def weight(axis, d, j):
            if (axis, d, j) not in loaded:
                ptr = cgutils.get_item_pointer2(context, builder, w_ary.data, w_shape, w_strides,
                                                sig.args[4].layout,
                                                [ir.Constant(i64, axis), ir.Constant(i64, d), ir.Constant(i64, j)])
                loaded[axis, d, j] = builder.load(ptr)
            return loaded[axis, d, j]

        splats = {}

        def splat(axis, d, j, n):
            """The weight broadcast to an n-vector."""
            if (axis, d, j, n) not in splats:
                vt = ir.VectorType(dbl, n)
                one = builder.insert_element(ir.Constant(vt, ir.Undefined), weight(axis, d, j), ir.Constant(i32, 0))
                splats[axis, d, j, n] = builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                                               ir.Constant(ir.VectorType(i32, n), [0] * n))
            return splats[axis, d, j, n]

        def madd(a, b, acc, n):
            """a * b + acc, or a * b when acc is None (the first term)."""
            if acc is None:
                return builder.fmul(a, b)
            return builder.call(fma(n), [a, b, acc])

        fmas = {}

        def fma(n):
            if n not in fmas:
                vt = ir.VectorType(dbl, n)
                fmas[n] = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                                         f"llvm.fmuladd.v{n}f64")
            return fmas[n]

        dys = sorted({dy for _, dy, _ in outputs})
        sums = [None] * len(outputs)
        align = sig.args[0].dtype.bitwidth // 8
        for kz in range(width):
            zoff = builder.add(base_v, builder.mul(sz_v, ir.Constant(i64, kz)))
            part = dict.fromkeys(dys)  # sum over ky of wy[dy][ky] * row(kz, ky), per y derivative order
            for ky in range(width):
                off = builder.add(zoff, builder.mul(sy_v, ir.Constant(i64, ky)))
                ptr = builder.bitcast(builder.gep(data, [off]), ir.VectorType(elem, m).as_pointer())
                row = builder.load(ptr, align=align)
                if elem != dbl:
                    row = builder.fpext(row, vec)
                for dy in dys:
                    part[dy] = madd(splat(1, dy, ky, m), row, part[dy], m)
            for o, (dz, dy, _) in enumerate(outputs):
                sums[o] = madd(splat(2, dz, kz, m), part[dy], sums[o], m)
        out_shape = cgutils.unpack_tuple(builder, out_ary.shape, 3)
        out_strides = cgutils.unpack_tuple(builder, out_ary.strides, 3)
        for o, (_, _, dx) in enumerate(outputs):
            # all components at once: x node kx is the slice [kx * nc, (kx + 1) * nc) of the row sums;
            # even and odd nodes in two chains, then added (half the dependent multiply-adds)
            chains = [None, None]
            for kx in range(width):
                piece = builder.shuffle_vector(sums[o], undef_m,
                                               ir.Constant(ir.VectorType(i32, nc), list(range(kx * nc, kx * nc + nc))))
                chains[kx % 2] = madd(splat(0, dx, kx, nc), piece, chains[kx % 2], nc)
            total = chains[0] if chains[1] is None else builder.fadd(chains[0], chains[1])
            for comp in range(nc):
                ptr = cgutils.get_item_pointer2(context, builder, out_ary.data, out_shape, out_strides,
                                                sig.args[5].layout,
                                                [p_v, ir.Constant(i64, comp), ir.Constant(i64, o)])
                builder.store(builder.extract_element(total, ir.Constant(i32, comp)), ptr)
        return context.get_dummy_value()

    return types.none(flat, base, sz, sy, w, out, p, W, NC, NDER), codegen


@overload(contract, prefer_literal=True, jit_options={"cache": True})
def _contract(flat, base, sz, sy, w, out, p, W, NC, NDER):
    if _literals(W, NC, NDER) and W.literal_value * NC.literal_value <= MAX_ROW:

        def vector(flat, base, sz, sy, w, out, p, W, NC, NDER):
            _vector_contract(flat, base, sz, sy, w, out, p, W, NC, NDER)

        return vector

    def loop(flat, base, sz, sy, w, out, p, W, NC, NDER):
        # "+ 0" drops literal types: one compile of the loop serves every width, nc and order
        _contract_loop(flat, base, sz, sy, w, out, p, W + 0, NC + 0, NDER + 0)

    return loop


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _contract_loop(flat, base, sz, sy, w, out, p, W, NC, NDER):
    """:func:`contract` as loops (one compile for all widths, component counts and orders)."""
    m = W * NC
    nout = (1, 3, 6)[NDER]
    acc = np.zeros(nout * m)
    for kz in range(W):
        for ky in range(W):
            r = base + kz * sz + ky * sy
            for o in range(nout):
                f = w[2, OUT_DZ[NDER, o], kz] * w[1, OUT_DY[NDER, o], ky]
                for j in range(m):
                    acc[o * m + j] += f * flat[r + j]
    for o in range(nout):
        dx = OUT_DX[NDER, o]
        for comp in range(NC):
            s = 0.0
            for kx in range(W):
                s += w[0, dx, kx] * acc[o * m + kx * NC + comp]
            out[p, comp, o] = s
