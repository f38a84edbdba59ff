"""3-D Morton (Z-order) keys: interleave the bits of (ix, iy, iz), 21 bits per axis, into one uint64.

Bit ``3*k`` of the key is bit ``k`` of ``ix``, bit ``3*k+1`` is bit ``k`` of ``iy`` and bit ``3*k+2`` is
bit ``k`` of ``iz``. Points (or chunks, or shards) that are close in space get close keys, so sorting by
key groups a query by neighbourhood, and contiguous key ranges make compact partitions.
"""

from __future__ import annotations

import numba
import numpy as np

BITS = 21
MAX_INDEX = (1 << BITS) - 1

__all__ = ["BITS", "MAX_INDEX", "decode3", "encode3", "morton_argsort"]


@numba.njit(cache=True, inline="always")
def _spread(v: np.uint64) -> np.uint64:
    # Insert two zero bits between each of the low 21 bits (the classic magic-number bit split).
    v = v & np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)
    return v


@numba.njit(cache=True, inline="always")
def _compact(v: np.uint64) -> np.uint64:
    # Inverse of _spread: gather every third bit back into the low 21 bits.
    v = v & np.uint64(0x1249249249249249)
    v = (v | (v >> np.uint64(2))) & np.uint64(0x10C30C30C30C30C3)
    v = (v | (v >> np.uint64(4))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v >> np.uint64(8))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v >> np.uint64(16))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v >> np.uint64(32))) & np.uint64(0x1FFFFF)
    return v


@numba.njit(cache=True)
def _encode(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, out: np.ndarray) -> None:
    for i in range(out.size):
        out[i] = (
            _spread(np.uint64(ix[i]))
            | (_spread(np.uint64(iy[i])) << np.uint64(1))
            | (_spread(np.uint64(iz[i])) << np.uint64(2))
        )


@numba.njit(cache=True)
def _decode(keys: np.ndarray, ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> None:
    for i in range(keys.size):
        k = keys[i]
        ix[i] = _compact(k)
        iy[i] = _compact(k >> np.uint64(1))
        iz[i] = _compact(k >> np.uint64(2))


def _as_index(name: str, a: np.ndarray | int, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(a), shape)
    if arr.size and (arr.min() < 0 or arr.max() > MAX_INDEX):
        raise ValueError(f"{name} must be in [0, {MAX_INDEX}] for 21-bit Morton keys; got {arr.min()}..{arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64).ravel()


def encode3(ix: np.ndarray | int, iy: np.ndarray | int, iz: np.ndarray | int) -> np.ndarray:
    """Morton keys of integer coordinates.

    Parameters
    ----------
    ix, iy, iz : array_like of int
        Non-negative indices below ``2**21``; broadcast against each other.

    Returns
    -------
    numpy.ndarray of uint64
        Keys with the broadcast shape of the inputs.
    """
    shape = np.broadcast_shapes(np.shape(ix), np.shape(iy), np.shape(iz))
    x, y, z = (_as_index(n, a, shape) for n, a in (("ix", ix), ("iy", iy), ("iz", iz)))
    out = np.empty(x.size, dtype=np.uint64)
    _encode(x, y, z, out)
    return out.reshape(shape)


def decode3(keys: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`encode3`: return ``(ix, iy, iz)`` as int64 arrays of the shape of ``keys``."""
    k = np.asarray(keys)
    shape = k.shape
    flat = np.ascontiguousarray(k, dtype=np.uint64).ravel()
    ix, iy, iz = (np.empty(flat.size, dtype=np.int64) for _ in range(3))
    _decode(flat, ix, iy, iz)
    return ix.reshape(shape), iy.reshape(shape), iz.reshape(shape)


def morton_argsort(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """Indices that sort the points (ix, iy, iz) by Morton key (a stable sort, so ties keep input order)."""
    return np.argsort(encode3(ix, iy, iz), kind="stable")
