"""The spatial methods: their codes, stencil widths and offsets, orders, and exact coefficient tables.

What a method *is*; :mod:`labservice.interpolation.weights` computes its weights at a coordinate and
:mod:`labservice.interpolation.kernels` contracts them with the data. A new method adds its row to
:data:`METHODS`, its width and offset below, and its weights in ``weights.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numba
import numpy as np

WMAX = 9  # widest stencil (fd8noint)

# Method codes shared with the numba kernels.
NONE, TRILINEAR, LAG4, LAG6, LAG8, M1Q4, M2Q8, FD4, FD6, FD8, FD4LAG4 = range(11)


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

@numba.njit(cache=True, inline="always")
def method_width(code):
    """Stencil width (nodes per axis) of method ``code``."""
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



@numba.njit(cache=True, inline="always")
def is_nearest(code):
    """Whether method ``code`` is centred on the nearest node (none, fd*noint) rather than on a cell."""
    return code == NONE or code == FD4 or code == FD6 or code == FD8


@numba.njit(cache=True, inline="always")
def method_offset(code):
    """Stencil nodes before the base node (the cell's lower node, or the nearest node for fd*noint/none)."""
    if is_nearest(code):
        return method_width(code) // 2
    if code == FD4LAG4:
        return 3
    return method_width(code) // 2 - 1



def _denominators() -> np.ndarray:
    out = np.zeros((WMAX + 1, WMAX))
    for m in range(1, WMAX + 1):
        for j in range(m):
            out[m, j] = 1.0 / np.prod([j - k for k in range(m) if k != j], dtype=np.float64)
    return out


LAG_INV_DEN = _denominators()  # 1 / prod_{k != j} (j - k) for nodes 0..m-1



# Tables as flat tuples: numba freezes them as constants, so the scalar functions below touch no arrays
# (passing arrays into functions costs reference-count updates per call, which dominated the hot loop).
LAG_INV_DEN_T = tuple(float(v) for v in LAG_INV_DEN.ravel())
FD_FIRST_T = tuple(float(v) for v in FD_FIRST.ravel())
FD_SECOND_T = tuple(float(v) for v in FD_SECOND.ravel())
M1Q4_T = tuple(float(v) for v in M1Q4_COEF.ravel())
M2Q8_T = tuple(float(v) for v in M2Q8_COEF.ravel())
