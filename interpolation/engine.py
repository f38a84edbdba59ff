"""Evaluate a spatial method at N points of stored time steps, reading each needed block once.

The flow per batch of points (:class:`Placement`): place every point once, giving it a wall status, a
sort key and a placement record (:func:`kernels.sort_keys`), reject points outside non-periodic axes,
counting-sort the records by block and by the Morton index of a sub-cube inside the block. Then, for each
stored time step asked for, each block with points is fetched once (:func:`blocks.block_array`: a cached
padded block for dense requests, the stencils' bounding box otherwise, both through the storage chunk
cache) and evaluated by a numba kernel specialised for the stencil width, which writes in evaluation
order; one pass then moves the values to the caller's order. A big block's points are split into
contiguous shares, one per thread (the kernels release the GIL). A placement is reused for every time
step of a series. Memory is bounded by the batch size and the block size, whatever N is.

Small batches (below :data:`PARALLEL_MIN` points, e.g. one web request) run the serial kernels in the
calling thread, with the GIL released: a parallel region needs every worker thread scheduled at once,
which on a busy machine costs milliseconds per region, and concurrent requests already keep the cores
busy.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from labservice.errors import InvalidInput, OutOfDomain, unknown
from labservice.interpolation import kernels, workspace
from labservice.interpolation.blocks import BlockLayout, RegionSource, block_array
from labservice.interpolation.methods import METHODS, Method
from labservice.interpolation.placement import AxisArrays

DEFAULT_BATCH = 1 << 20  # points per batch: bounds the per-batch placement and evaluation-order arrays
DEFAULT_BLOCK = 128  # target edge (in nodes) of a block; its padded box is what a kernel call reads
PARALLEL_MIN = 32768  # points from which a batch (or a block's share of it) is worth a parallel region


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads for the evaluation of big batches (the kernels release the GIL; threads cost no compile,
    unlike a numba parallel driver per stencil width)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max(1, numba.get_num_threads() - 1), thread_name_prefix="labservice-eval")
        return _POOL


def _forget_pool() -> None:
    global _POOL
    _POOL = None  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pool)


@dataclass
class Placement:
    """One batch of points sorted by block: everything but the data.

    ``records`` (N, 4) float64 holds each point's placement (stencil starts, ``u`` per axis with its wall
    flag; see :func:`kernels.sort_keys_range`) in evaluation order: ``records[q]`` belongs to
    ``points[order[q]]``. Block ``b`` holds the sorted points ``block_first[b]:block_first[b + 1]``,
    neighbours next to each other. ``status`` (N,) int8 is 0 (interior) or 1 (stencil shifted one-sided
    at a non-periodic wall) per point, in the caller's order.
    """

    points: np.ndarray
    records: np.ndarray
    order: np.ndarray
    block_first: np.ndarray
    status: np.ndarray
    memory: workspace.Workspace | None = None  # where the arrays above live, if pooled

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised float64 array of ``shape``. It reuses the workspace's caller-order records,
        which nothing reads after the sort, when they fit (fresh memory costs page faults: about 8 ms per
        32 MB here)."""
        size = int(np.prod(shape))
        if self.memory is not None:
            spare = self.memory.records[: self.order.shape[0]].reshape(-1)
            if spare.size >= size:
                return spare[:size].reshape(shape)
        return np.empty(shape)

    def release(self) -> None:
        """Hand the arrays back to the workspace pool; the placement must not be used afterwards."""
        if self.memory is not None:
            workspace.give(self.memory)
            self.memory = None

    @property
    def record_bits(self) -> np.ndarray:
        """The records as int64 (the packed stencil starts are integers)."""
        return self.records.view(np.int64)

    @property
    def clipped(self) -> np.ndarray:
        """(N,) bool: points whose stencil was shifted one-sided at a non-periodic wall."""
        return self.status == 1

    def blocks(self):
        """``(block_id, first, stop)`` of every block holding points: its sorted points are
        ``records[first:stop]``."""
        bf = self.block_first
        for b in np.nonzero(bf[1:] > bf[:-1])[0]:
            yield int(b), int(bf[b]), int(bf[b + 1])


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
        if axis.size > kernels.MAX_AXIS_NODES:
            raise InvalidInput(
                f"axis {name} has {axis.size} nodes; point queries support axes of up to "
                f"{kernels.MAX_AXIS_NODES:,} nodes (read such a grid with cutouts)"
            )
        if axis.size < method.width:
            raise InvalidInput(
                f"spatial method {method.name!r} needs {method.width} nodes per axis but axis {name} has "
                f"only {axis.size}; choose a narrower method"
            )


def as_points(points, strict: bool = False) -> np.ndarray:
    """Validate user points into a C-contiguous float64 (N, 3) array (x, y, z).

    Parameters
    ----------
    points : array_like
        (N, 3) coordinates; in-process callers may also pass one (3,) point.
    strict : bool
        For request bodies: also refuse a (3,) point, an empty array and NaN or inf. In-process, those
        pass, so that :meth:`PointEvaluator.check` names the bad point and ``Dataset.inside`` answers False.

    Raises
    ------
    InvalidInput
        With a message naming ``points`` and what to change.
    """
    if isinstance(points, np.ndarray):
        if points.dtype.kind not in "fiu":
            raise InvalidInput(f"points must hold numbers; got dtype {points.dtype}")
        p = np.ascontiguousarray(points, dtype=np.float64)
    else:
        try:
            p = np.ascontiguousarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInput("points must be a list of [x, y, z] number triples") from None
    if strict and p.size == 0:
        raise InvalidInput("points is empty; send at least one [x, y, z] point")
    if not strict and p.ndim == 1 and p.size == 3:
        p = p.reshape(1, 3)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InvalidInput(f"points must have shape (N, 3), one [x, y, z] per row; got shape {tuple(p.shape)}")
    if strict:
        bad = ~np.isfinite(p)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise InvalidInput(f"points must be finite numbers; row {row} is {p[row].tolist()} (NaN or inf)")
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
        Where grid values come from (a ``ChunkReader``; its ``cache`` also keeps padded blocks).
    variable : str
        The stored variable.
    method : str
        A spatial method name from :data:`METHODS`.
    nder : int
        0 (values), 1 (gradient) or 2 (second derivatives).
    batch, block : int
        Points per batch, and the target block edge in nodes.
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
        self.layout = BlockLayout(meta, variable, block)
        self.nout = (1, 3, 6)[self.nder]

    def _parallel(self, npoints: int) -> bool:
        return npoints >= PARALLEL_MIN and numba.get_num_threads() > 1

    def place(self, points: np.ndarray, offset: int = 0) -> Placement:
        """Place and sort one batch of (N, 3) float64 points; raises OutOfDomain for outside points."""
        n = points.shape[0]
        memory = workspace.take(n)
        keys, status, records = memory.keys[:n], memory.status[:n], memory.records[:n]
        lay = self.layout
        bits = lay.sub_bits(n)
        args = (self.method.code, points, *self.axes.as_tuple(), lay.key_table(bits), keys, status, records,
                records.view(np.int64))
        parallel = self._parallel(n)
        if parallel:
            outside = kernels.sort_keys(*args)
        else:
            outside = kernels.sort_keys_range(args[0], points, 0, n, *args[2:])
        if outside:
            raise self._outside(points, offset)
        nbuckets = lay.count << (3 * bits)
        order, ordered = memory.order[:n], memory.ordered[:n]
        words_in, words_out = records.view(np.int64), ordered.view(np.int64)  # moved as integers: bit-exact
        if parallel:
            first = kernels.bucket_sort_parallel(keys, words_in, nbuckets, numba.get_num_threads(), order, words_out)
        else:
            first = kernels.bucket_sort(keys, words_in, nbuckets, order, words_out)
        return Placement(points, ordered, order, first[:: 1 << (3 * bits)].copy(), status, memory=memory)

    def _outside(self, points: np.ndarray, offset: int) -> OutOfDomain:
        """The error naming the points outside the domain (per-axis status from the full placement)."""
        _, status = self._stencil_starts(points)
        return _outside_error(self.meta, points, status, offset)

    def _stencil_starts(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-point, per-axis (x, y, z) stencil start nodes and wall status: the full placement, which the
        fast path does not keep."""
        n = points.shape[0]
        start = np.empty((n, 3), dtype=np.int64)
        u = np.empty((n, 3), dtype=np.float64)
        status = np.empty((n, 3), dtype=np.int8)
        kernels.place_points(self.method.code, points, *self.axes.as_tuple(), start, u, status)
        return start, status

    def check(self, points) -> np.ndarray:
        """Validate points and their domain without reading data; returns the (N, 3) float64 array."""
        p = as_points(points)
        for i in range(0, p.shape[0], self.batch):
            self.place(p[i : i + self.batch], offset=i)
        return p

    def evaluate(self, plan: Placement, t_index: int, out: np.ndarray) -> None:
        """Evaluate a placed batch at stored time ``t_index`` into ``out`` (N, ncomp, nout) float64."""
        values = plan.buffer(out.shape)
        self.evaluate_sorted(plan, t_index, values)
        self.unsort(plan, values, out)

    def evaluate_sorted(self, plan: Placement, t_index: int, values: np.ndarray) -> None:
        """Like :meth:`evaluate`, but ``values[q]`` is the value at ``points[plan.order[q]]`` (evaluation
        order)."""
        code = self.method.code
        axes = self.axes.as_tuple()
        kernel = kernels.EVALUATORS[self.method.width]
        rec, reci = plan.records, plan.record_bits
        for b, q0, q1 in plan.blocks():
            def need(q0=q0, q1=q1):
                return kernels.stencil_box(code, reci, q0, q1)

            region, origin = block_array(self.source, self.layout, t_index, b, need)
            args = (rec, reci, region, origin, *axes, values)
            self._shares(q0, q1, lambda a, z, args=args: kernel(code, self.nder, a, z, *args))

    def unsort(self, plan: Placement, values: np.ndarray, out: np.ndarray) -> None:
        """Move evaluation-order ``values`` to the caller's order in ``out`` (same shape, C-contiguous)."""
        if not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous (N, ncomp, nout) float64 array")
        src, dst = values.reshape(values.shape[0], -1), out.reshape(out.shape[0], -1)
        self._shares(0, values.shape[0], lambda a, z: kernels.unsort(plan.order, src, dst, a, z))

    def _shares(self, q0: int, q1: int, run) -> None:
        """``run(a, z)`` over ``q0 .. q1``, in contiguous shares on the thread pool when big (the kernels
        release the GIL; contiguous, so neighbouring points stay on one thread)."""
        if not self._parallel(q1 - q0):
            run(q0, q1)
            return
        cuts = np.linspace(q0, q1, numba.get_num_threads() + 1).astype(np.int64)
        shares = [_pool().submit(run, int(a), int(z)) for a, z in zip(cuts[1:-1], cuts[2:], strict=True)]
        run(q0, int(cuts[1]))
        for share in shares:
            share.result()

    def __call__(self, t_index: int, points, out: np.ndarray | None = None) -> Evaluation:
        """Evaluate at stored time index ``t_index``; ``out`` (N, ncomp, nout) float64 may be given."""
        p = as_points(points)
        n = p.shape[0]
        if out is None:
            out = np.empty((n, self.ncomp, self.nout), dtype=np.float64)
        clipped = np.zeros(n, dtype=bool)
        for i in range(0, n, self.batch):
            plan = self.place(p[i : i + self.batch], offset=i)
            self.evaluate(plan, t_index, out[i : i + self.batch])
            clipped[i : i + self.batch] = plan.clipped
            plan.release()
        return Evaluation(out, clipped)

    def combine(self, steps, weights: np.ndarray, points) -> Evaluation:
        """Time-combined values ``sum_k weights[j, k] * value(steps[k])``: (T, N, ncomp, nout).

        Each batch is placed once and evaluated once per stored step, whatever the number T of
        requested times.
        """
        p = as_points(points)
        n = p.shape[0]
        T = weights.shape[0]
        out = np.zeros((T, n, self.ncomp, self.nout))
        clipped = np.zeros(n, dtype=bool)
        for i in range(0, n, self.batch):
            j = min(n, i + self.batch)
            plan = self.place(p[i:j], offset=i)
            clipped[i:j] = plan.clipped
            values = plan.buffer((j - i, self.ncomp, self.nout))
            src = values.reshape(j - i, -1)
            for k, step in enumerate(steps):
                self.evaluate_sorted(plan, int(step), values)
                for r in np.nonzero(weights[:, k])[0]:
                    dst, wk = out[r, i:j].reshape(j - i, -1), float(weights[r, k])
                    add = functools.partial(kernels.unsort_add, plan.order, src, wk, dst)
                    self._shares(0, j - i, add)
            plan.release()
        return Evaluation(out, clipped)

    def groups(self, points: np.ndarray, offset: int = 0):
        """Place and group a batch: ``(starts, status, order, edges, lo, hi)``.

        ``starts`` and ``status`` are (N, 3) per axis (x, y, z). Group g holds the points
        ``order[edges[g]:edges[g+1]]``, whose stencils lie in the node box ``lo[g] .. hi[g] - 1``.
        """
        plan = self.place(points, offset)
        start, status = self._stencil_starts(points)
        bf = plan.block_first
        used = np.nonzero(bf[1:] > bf[:-1])[0]
        edges = np.append(bf[used], bf[-1])
        lo = np.empty((used.size, 3), dtype=np.int64)
        hi = np.empty((used.size, 3), dtype=np.int64)
        reci = plan.record_bits
        for g, b in enumerate(used):
            lo[g], hi[g] = kernels.stencil_box(self.method.code, reci, bf[b], bf[b + 1])
        return start, status, plan.order, edges, lo, hi


def evaluate_points(source: RegionSource, variable: str, t_index: int, points, method: str = "lag4",
                    nder: int = 0) -> Evaluation:
    """One-shot helper: :class:`PointEvaluator` for a single stored time index."""
    return PointEvaluator(source, variable, method, nder)(t_index, points)
