"""Evaluate a spatial method at N points of one stored time step, reading each needed region once.

The flow per batch of points: place every stencil (:func:`kernels.place_stencils`), reject points outside
non-periodic axes, sort the points by the Morton key of the chunk holding their stencil centre (a radix
sort), cut the sorted list into groups of neighbouring chunks, read each group's stencil bounding box
once through the source (the storage :class:`~labservice.storage.ChunkReader`, so through its cache), and
evaluate the group with the numba kernel. Results land in the caller's order. Memory is bounded by the
batch size and the group block size, whatever N is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from labservice.errors import InvalidInput, OutOfDomain, unknown
from labservice.interpolation import kernels
from labservice.interpolation.weights import METHODS, AxisArrays, Method

DEFAULT_BATCH = 1 << 20  # points per batch: bounds the per-batch index arrays (~60 bytes per point)
DEFAULT_BLOCK = 128  # target edge (in nodes) of the box a group of chunks reads at once


class RegionSource(Protocol):
    """What the engine reads from: :class:`labservice.storage.ChunkReader` satisfies it."""

    @property
    def meta(self): ...

    def region(self, variable: str, t: int, lo, hi) -> np.ndarray: ...


@dataclass
class Evaluation:
    """Raw kernel output: ``values`` (N, ncomp, 1 | 3 | 6) and the per-point ``clipped`` flags (N,)."""

    values: np.ndarray
    clipped: np.ndarray


def method_info(name: str) -> Method:
    """The :class:`Method` called ``name``, or the standard unknown-method error with suggestions."""
    try:
        return METHODS[name]
    except KeyError:
        raise unknown("spatial method", name, METHODS, error=InvalidInput) from None


def check_method(meta, method: Method, nder: int) -> None:
    """Reject a method that cannot give ``nder`` derivatives, needs a uniform axis, or is too wide."""
    if nder > method.max_derivative:
        what = "gradients" if nder == 1 else "second derivatives"
        ok = sorted(m.name for m in METHODS.values() if m.max_derivative >= nder)
        raise InvalidInput(
            f"spatial method {method.name!r} cannot give {what}; use one of: {', '.join(ok)}"
        )
    for name in ("x", "y", "z"):
        axis = meta.grid.axis(name)
        if method.uniform_only and not axis.uniform:
            raise InvalidInput(
                f"spatial method {method.name!r} needs uniform axes but axis {name} is stretched; "
                f"use lag{method.width} instead"
            )
        if axis.size < method.width:
            raise InvalidInput(
                f"spatial method {method.name!r} needs {method.width} nodes per axis but axis {name} has "
                f"only {axis.size}; choose a narrower method"
            )


def as_points(points) -> np.ndarray:
    """Validate user points into a C-contiguous float64 (N, 3) array (x, y, z)."""
    p = np.ascontiguousarray(points, dtype=np.float64)
    if p.ndim == 1 and p.size == 3:
        p = p.reshape(1, 3)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InvalidInput(f"points must have shape (N, 3) with columns x, y, z; got shape {p.shape}")
    return p


def _outside_error(meta, points: np.ndarray, status: np.ndarray, offset: int) -> OutOfDomain:
    bad = np.nonzero((status == 2).any(axis=1))[0]
    parts = []
    for i in bad[:5]:
        for a, name in enumerate("xyz"):
            if status[i, a] == 2:
                lo, hi = meta.grid.axis(name).bounds
                parts.append(f"point {i + offset} has {name}={float(points[i, a])!r}, outside [{lo:.6g}, {hi:.6g}]")
                break
    more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
    return OutOfDomain(
        f"{bad.size} point(s) lie outside the domain: " + "; ".join(parts) + more
        + ". Move them inside the non-periodic axes' bounds (coordinates must also be finite).",
        indices=[int(i + offset) for i in bad[:100]],
    )


class PointEvaluator:
    """Evaluates one method at many points of one variable, for any stored time index.

    Parameters
    ----------
    source : RegionSource
        Where grid values come from (a ``ChunkReader``).
    variable : str
        The stored variable.
    method : str
        A spatial method name from :data:`METHODS`.
    nder : int
        0 (values), 1 (gradient) or 2 (second derivatives).
    batch, block : int
        Points per batch, and the target edge of a group's read box in nodes.
    """

    def __init__(self, source: RegionSource, variable: str, method: str, nder: int = 0,
                 batch: int = DEFAULT_BATCH, block: int = DEFAULT_BLOCK) -> None:
        meta = source.meta
        if variable not in meta.variables:
            raise unknown("variable", variable, meta.variables)
        self.source = source
        self.meta = meta
        self.variable = variable
        self.method = method_info(method)
        self.nder = int(nder)
        check_method(meta, self.method, self.nder)
        self.axes = AxisArrays.from_grid(meta.grid)
        self.ncomp = meta.variables[variable].ncomp
        self.batch = max(1, int(batch))
        cz, cy, cx = meta.array_chunks(variable)[1:4]
        self.chunk = np.array([cx, cy, cz], dtype=np.int64)
        nchunks = [-(-n // c) for n, c in zip(meta.grid.shape, (cx, cy, cz))]
        self.key_bits = 3 * max(1, int(np.ceil(np.log2(max(nchunks)))) if max(nchunks) > 1 else 1)
        # Groups are aligned cubes of 2^k chunks per axis (contiguous in Morton order).
        k = 0
        while (2 ** (k + 1)) * max(cx, cy, cz) <= block and 3 * (k + 1) <= self.key_bits:
            k += 1
        self.group_shift = 3 * k
        m = self.method
        self.centre = m.width // 2 if m.name in ("none", "fd4noint", "fd6noint", "fd8noint") else (
            3 if m.name == "fd4lag4" else m.width // 2 - 1)
        self.nout = (1, 3, 6)[self.nder]

    def place(self, points: np.ndarray, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Stencil starts (N, 3) and status (N, 3) for ``points``; raises OutOfDomain for outside points."""
        n = points.shape[0]
        starts = np.empty((n, 3), dtype=np.int64)
        status = np.empty((n, 3), dtype=np.int8)
        kernels.place_stencils(self.method.code, points, *self.axes.as_tuple(), starts, status)
        if (status == 2).any():
            raise _outside_error(self.meta, points, status, offset)
        return starts, status

    def check(self, points) -> np.ndarray:
        """Validate points and their domain without reading data; returns the (N, 3) float64 array."""
        p = as_points(points)
        for i in range(0, p.shape[0], self.batch):
            self.place(p[i : i + self.batch], offset=i)
        return p

    def __call__(self, t_index: int, points, out: np.ndarray | None = None) -> Evaluation:
        """Evaluate at stored time index ``t_index``; ``out`` (N, ncomp, nout) float64 may be given."""
        p = as_points(points)
        n = p.shape[0]
        if out is None:
            out = np.empty((n, self.ncomp, self.nout), dtype=np.float64)
        clipped = np.zeros(n, dtype=bool)
        for i in range(0, n, self.batch):
            j = min(n, i + self.batch)
            self._batch(t_index, p[i:j], out[i:j], clipped[i:j], i)
        return Evaluation(out, clipped)

    def groups(self, points: np.ndarray, offset: int = 0):
        """Place and group a batch: ``(starts, status, order, edges, lo, hi)``.

        Group g holds the points ``order[edges[g]:edges[g+1]]``, whose stencils lie in the node box
        ``lo[g] .. hi[g] - 1`` (x, y, z).
        """
        starts, status = self.place(points, offset)
        keys = np.empty(points.shape[0], dtype=np.uint64)
        shift = np.full(3, self.centre, dtype=np.int64)
        kernels.chunk_keys(starts, shift, self.axes.n, self.axes.periodic, self.chunk, keys)
        order = kernels.radix_argsort(keys, self.key_bits)
        edges, lo, hi = kernels.group_bounds(order, starts, keys, self.group_shift, self.method.width)
        return starts, status, order, edges, lo, hi

    def _batch(self, t_index: int, points: np.ndarray, out: np.ndarray, clipped: np.ndarray, offset: int) -> None:
        _, status, order, edges, lo, hi = self.groups(points, offset)
        clipped[:] = (status == 1).any(axis=1)
        code = self.method.code
        axes = self.axes.as_tuple()
        for g in range(lo.shape[0]):
            region = self.source.region(
                self.variable, t_index, (lo[g, 2], lo[g, 1], lo[g, 0]), (hi[g, 2], hi[g, 1], hi[g, 0])
            )
            kernels.evaluate(code, self.nder, points, order[edges[g] : edges[g + 1]], lo[g], region, *axes, out)


def evaluate_points(source: RegionSource, variable: str, t_index: int, points, method: str = "lag4",
                    nder: int = 0) -> Evaluation:
    """One-shot helper: :class:`PointEvaluator` for a single stored time index."""
    return PointEvaluator(source, variable, method, nder)(t_index, points)
