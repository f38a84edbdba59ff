"""The vectorised tensor-product contraction against a direct numpy sum."""

import numba
import numpy as np
import pytest

from labservice.interpolation.simd import OUTPUTS, contract


def _caller(W: int, nc: int, nder: int):
    # contract needs W, nc and nder as literals at the call site: one compiled caller per case
    src = (
        "def call(flat, base, sz, sy, w, out, p):\n"
        f"    contract(flat, base, sz, sy, w, out, p, {W}, {nc}, {nder})\n"
    )
    scope = {"contract": contract}
    exec(src, scope)
    return numba.njit(scope["call"])


def _reference(R, start, w, W, nder):
    """Sum over the stencil of wz * wy * wx * value, per output (z, y, x derivative orders)."""
    z0, y0, x0 = start
    box = R[z0 : z0 + W, y0 : y0 + W, x0 : x0 + W].astype(np.float64)
    return np.stack(
        [np.einsum("k,j,i,kjic->c", w[2, dz, :W], w[1, dy, :W], w[0, dx, :W], box) for dz, dy, dx in OUTPUTS[nder]],
        axis=-1,
    )


@pytest.mark.parametrize(
    "W, nc, nder, dtype",
    [(4, 3, 0, np.float32), (6, 1, 1, np.float64), (8, 3, 2, np.float32), (2, 2, 1, np.float64), (9, 3, 1, np.float32)],
)
def test_contract_equals_direct_sum(W, nc, nder, dtype):
    # (2, 2, 1) has nc = 2: the loop version; (9, 3, 1) a 27-value row, unrolled as vectors
    rng = np.random.default_rng(W * 10 + nc)
    R = rng.standard_normal((12, 11, 10, nc)).astype(dtype)
    w = rng.standard_normal((3, 3, 9))
    out = np.full((3, nc, len(OUTPUTS[nder])), np.nan)
    flat = R.reshape(-1)
    sy, sz = R.shape[2] * nc, R.shape[1] * R.shape[2] * nc
    call = _caller(W, nc, nder)
    for p, start in enumerate([(0, 0, 0), (12 - W, 11 - W, 10 - W), (1, 2, 1)]):
        base = start[0] * sz + start[1] * sy + start[2] * nc
        call(flat, base, sz, sy, w, out, p)
        np.testing.assert_allclose(out[p], _reference(R, start, w, W, nder), rtol=1e-12, atol=1e-12)


def test_one_weight_of_one_picks_the_stored_value_exactly():
    # at a grid node the weights are 1 and 0: the sum must be the float32 value, widened, with no rounding
    R = np.random.default_rng(3).standard_normal((8, 8, 8, 3)).astype(np.float32)
    w = np.zeros((3, 3, 9))
    w[0, 0, 2] = w[1, 0, 1] = w[2, 0, 3] = 1.0
    out = np.empty((1, 3, 1))
    _caller(6, 3, 0)(R.reshape(-1), 0, 8 * 8 * 3, 8 * 3, w, out, 0)
    assert np.array_equal(out[0, :, 0], R[3, 1, 2].astype(np.float64))
