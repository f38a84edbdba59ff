"""Cutout regions: parse per-axis index ranges, size them before reading, and read them chunk by chunk.

A range is ``start:stop:step`` in grid indices, 0-based with ``stop`` exclusive (Python slicing, not
JHTDB's 1-based inclusive ranges). On a periodic axis ``start`` may be negative and ``stop`` may pass the
end of the grid: indices wrap, and the physical coordinates of wrapped points are shifted by whole periods
so they keep increasing. On a non-periodic axis the range must lie inside the grid.

Reading is stride-aware. Only the inner chunks that hold a selected index are fetched, so a stride larger
than the chunk size skips whole chunks (giverny reads at full resolution and strides afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from labservice.errors import InvalidInput, OutOfDomain, unknown
from labservice.storage.metadata import AXES, Axis, DatasetMeta

# Largest |index| accepted on a periodic axis; keeps index arithmetic far from int64 overflow.
MAX_ABS_INDEX = 2**40
DEFAULT_BLOCK_BYTES = 64 * 2**20
FETCH_BATCH_BYTES = 32 * 2**20

RangeSpec = str | int | slice | Sequence[int | None] | None


class ChunkSource(Protocol):
    """What a cutout needs from :class:`labservice.storage.ChunkReader`."""

    meta: DatasetMeta

    def chunks(self, variable: str, t: int, indices: Sequence[tuple[int, int, int]]) -> list[np.ndarray]: ...


# -- parsing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisRange:
    """A validated index range along one axis.

    Attributes
    ----------
    name : str
        ``"x"``, ``"y"`` or ``"z"``.
    start, stop, step : int
        The range as given (``stop`` exclusive); on periodic axes these may lie outside ``[0, size)``.
    size : int
        Number of grid points along the axis.
    periodic : bool
        Whether indices wrap.
    """

    name: str
    start: int
    stop: int
    step: int
    size: int
    periodic: bool

    @property
    def count(self) -> int:
        """Number of selected points."""
        return -(-(self.stop - self.start) // self.step)

    def unwrapped(self) -> np.ndarray:
        """Selected indices before wrapping (int64)."""
        return self.start + self.step * np.arange(self.count, dtype=np.int64)

    def indices(self) -> np.ndarray:
        """Selected grid indices, wrapped into ``[0, size)`` (int64)."""
        return np.mod(self.unwrapped(), self.size)

    def coords(self, axis: Axis) -> np.ndarray:
        """Physical coordinates of the selected points; wrapped points are shifted by whole periods."""
        i = self.unwrapped()
        c = axis.coords()[np.mod(i, self.size)]
        if self.periodic:
            c = c + np.floor_divide(i, self.size) * float(axis.period)  # type: ignore[arg-type]
        return c

    def as_text(self) -> str:
        return f"{self.start}:{self.stop}:{self.step}"


def _as_int(value: Any, name: str, spec: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} range parts must be integers; got {spec!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InvalidInput(
        f"{name} must look like 'start:stop:step' with integer grid indices (0-based, stop exclusive); "
        f"got {spec!r}"
    )


def _split(spec: RangeSpec, name: str) -> tuple[Any, Any, Any]:
    """Split any accepted spelling into raw (start, stop, step), each possibly None."""
    if spec is None:
        return None, None, None
    if isinstance(spec, slice):
        return spec.start, spec.stop, spec.step
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return int(spec), int(spec) + 1, 1
    if isinstance(spec, str):
        parts = spec.strip().split(":")
        if len(parts) == 1 and parts[0]:
            i = _as_int(parts[0], name, spec)
            return i, i + 1, 1
        if len(parts) > 3:
            raise InvalidInput(f"{name} must look like 'start:stop:step' (at most two colons); got {spec!r}")
        parts += [""] * (3 - len(parts))
        return tuple(p if p.strip() else None for p in parts)  # type: ignore[return-value]
    if isinstance(spec, (list, tuple, np.ndarray)) and 1 <= len(spec) <= 3:
        parts = list(spec) + [None] * (3 - len(spec))
        if len(spec) == 1:
            parts[1] = None if parts[0] is None else _as_int(parts[0], name, spec) + 1
        return parts[0], parts[1], parts[2]
    raise InvalidInput(
        f"{name} must be 'start:stop:step' or a (start, stop[, step]) tuple of grid indices; got {spec!r}"
    )


def parse_range(spec: RangeSpec, name: str, axis: Axis) -> AxisRange:
    """Validate one axis range against the grid.

    Parameters
    ----------
    spec : str, int, slice, tuple or None
        ``"start:stop:step"`` (any part may be empty), ``(start, stop[, step])``, a ``slice``, a single
        index, or None for the whole axis.
    name : str
        Axis name, used in messages.
    axis : Axis
        The grid axis.

    Returns
    -------
    AxisRange

    Raises
    ------
    InvalidInput
        For malformed text, a step below 1, or an empty or reversed range.
    OutOfDomain
        For indices outside a non-periodic axis.
    """
    n = axis.size
    raw_start, raw_stop, raw_step = _split(spec, name)
    start = 0 if raw_start is None else _as_int(raw_start, name, spec)
    stop = n if raw_stop is None else _as_int(raw_stop, name, spec)
    step = 1 if raw_step is None else _as_int(raw_step, name, spec)
    if step < 1:
        raise InvalidInput(
            f"{name} step (stride) must be a positive integer; got {step}. Reversed ranges are not "
            f"supported: give start < stop and a step >= 1."
        )
    if stop <= start:
        raise InvalidInput(
            f"{name} range {start}:{stop} is empty or reversed: stop must be greater than start "
            f"(indices are 0-based and stop is exclusive)."
        )
    if axis.periodic:
        if max(abs(start), abs(stop)) > MAX_ABS_INDEX:
            raise InvalidInput(f"{name} indices must lie within +-{MAX_ABS_INDEX}; got {start}:{stop}")
    elif start < 0 or stop > n:
        raise OutOfDomain(
            f"{name} is not periodic: the range must lie in [0, {n}] (start >= 0, stop <= {n}); "
            f"got {start}:{stop}."
        )
    return AxisRange(name, start, stop, step, n, axis.periodic)


# -- planning --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutoutPlan:
    """A validated cutout region of one variable, known before any data is read."""

    dataset: str
    variable: str
    components: tuple[str, ...]
    units: str
    x: AxisRange
    y: AxisRange
    z: AxisRange
    grid: Any = field(repr=False, compare=False)  # the dataset's Grid, for coordinates

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(nz, ny, nx, ncomp) of one time step."""
        return (self.z.count, self.y.count, self.x.count, len(self.components))

    @property
    def strides(self) -> tuple[int, int, int]:
        """(sx, sy, sz)."""
        return (self.x.step, self.y.step, self.z.step)

    @property
    def nbytes(self) -> int:
        """Bytes of one time step as float32."""
        return 4 * math.prod(self.shape)

    def axis_range(self, name: str) -> AxisRange:
        return getattr(self, name)

    def coords(self, name: str) -> np.ndarray:
        return self.axis_range(name).coords(self.grid.axis(name))


def plan_cutout(
    meta: DatasetMeta, variable: str, x: RangeSpec = None, y: RangeSpec = None, z: RangeSpec = None
) -> CutoutPlan:
    """Validate a cutout request against the metadata, without reading anything.

    Raises
    ------
    NotFound
        For an unknown variable (with close matches suggested).
    InvalidInput, OutOfDomain
        For bad ranges; see :func:`parse_range`.
    """
    if variable not in meta.variables:
        raise unknown("variable", variable, meta.variables)
    var = meta.variables[variable]
    ranges = {
        name: parse_range(spec, name, meta.grid.axis(name))
        for name, spec in zip(AXES, (x, y, z), strict=True)
    }
    return CutoutPlan(
        dataset=meta.id,
        variable=variable,
        components=tuple(var.components),
        units=var.units,
        grid=meta.grid,
        **ranges,
    )


def cutout_shape(meta: DatasetMeta, variable: str, x: RangeSpec = None, y: RangeSpec = None,
                 z: RangeSpec = None, ntimes: int = 1) -> tuple[int, int, int, int, int]:
    """Shape ``(ntimes, nz, ny, nx, ncomp)`` of a cutout, computed from the metadata alone."""
    return (int(ntimes), *plan_cutout(meta, variable, x, y, z).shape)


def cutout_nbytes(meta: DatasetMeta, variable: str, x: RangeSpec = None, y: RangeSpec = None,
                  z: RangeSpec = None, ntimes: int = 1) -> int:
    """Size in bytes (float32) of a cutout; check it against limits before reading."""
    return 4 * math.prod(cutout_shape(meta, variable, x, y, z, ntimes))


def time_index(meta: DatasetMeta, time: float, rtol: float = 1e-9) -> int:
    """Index of a stored time: the only such lookup. Cutouts, filters and thresholds are never
    interpolated in time, so ``time`` must be stored.

    Raises
    ------
    OutOfDomain
        When ``time`` is not one of the stored times; the message names the nearest ones.
    """
    times = np.asarray(meta.times, dtype=np.float64)
    t = float(time)
    if not math.isfinite(t):
        raise InvalidInput(f"time must be a finite number; got {time!r}")
    i = int(np.argmin(np.abs(times - t)))
    # The one tolerance for "is this a stored time" (cutouts, filter, threshold, jobs): relative to the
    # largest stored time, not to t, because stored times like 0.1 * k carry rounding of the axis' scale;
    # a query of 0.0 (or a time near 0) on an axis reaching 1e3 is then judged like any other.
    scale = max(1.0, float(np.max(np.abs(times))))
    if abs(times[i] - t) <= rtol * scale:
        return i
    lo, hi = float(times[0]), float(times[-1])
    if t < lo or t > hi:
        raise OutOfDomain(f"time must be in [{lo:g}, {hi:g}] (the stored range); got {t:g}")
    below = times[times < t].max()
    above = times[times > t].min()
    raise OutOfDomain(
        f"cutouts, filters and thresholds are taken at stored times only; time {t:g} lies between stored "
        f"times {below:g} and {above:g}. Use one of those, or query points with temporal interpolation."
    )


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class Cutout:
    """One time step of one variable over a cutout region.

    Attributes
    ----------
    data : ndarray
        float32, shape (nz', ny', nx', ncomp).
    plan : CutoutPlan
        The region; ``x``/``y``/``z`` (physical coordinates) and ``x_index``/... (wrapped grid
        indices) derive from it.
    time : float
        The stored time.
    t_index : int
        Its index in the dataset's times.
    """

    data: np.ndarray
    plan: CutoutPlan
    time: float
    t_index: int

    @property
    def dataset(self) -> str:
        return self.plan.dataset

    @property
    def variable(self) -> str:
        return self.plan.variable

    @property
    def components(self) -> tuple[str, ...]:
        return self.plan.components

    @property
    def units(self) -> str:
        return self.plan.units

    @property
    def strides(self) -> tuple[int, int, int]:
        """(sx, sy, sz)."""
        return self.plan.strides

    @cached_property
    def x(self) -> np.ndarray:
        return self.plan.coords("x")

    @cached_property
    def y(self) -> np.ndarray:
        return self.plan.coords("y")

    @cached_property
    def z(self) -> np.ndarray:
        return self.plan.coords("z")

    @property
    def x_index(self) -> np.ndarray:
        return self.plan.x.indices()

    @property
    def y_index(self) -> np.ndarray:
        return self.plan.y.indices()

    @property
    def z_index(self) -> np.ndarray:
        return self.plan.z.indices()

    def attrs(self) -> dict[str, Any]:
        """JSON-friendly description written into every output format."""
        p = self.plan
        return {
            "dataset": p.dataset,
            "variable": p.variable,
            "components": list(p.components),
            "units": p.units,
            "time": float(self.time),
            "time_index": int(self.t_index),
            "strides": list(p.strides),
            "x_range": p.x.as_text(),
            "y_range": p.y.as_text(),
            "z_range": p.z.as_text(),
            "index_base": 0,
            "layout": "z, y, x, component",
        }


@dataclass(frozen=True)
class _Run:
    """Consecutive output positions that fall in one chunk, as a strided slice of that chunk."""

    chunk: int
    out: slice
    local: slice


def _runs(ax: AxisRange, chunk: int) -> list[_Run]:
    """Split an axis selection into runs that each lie in one chunk with a constant positive step.

    Without wrapping the step is the stride; after a wrap inside one chunk it can differ, so a run also
    ends where the index step changes.
    """
    idx = ax.indices().tolist()
    runs: list[_Run] = []
    a = 0
    while a < len(idx):
        kc = idx[a] // chunk
        b, step = a + 1, 0
        while b < len(idx) and idx[b] // chunk == kc:
            d = idx[b] - idx[b - 1]
            if d <= 0 or (step and d != step):
                break
            step, b = d, b + 1
        lo = idx[a] - kc * chunk
        runs.append(_Run(kc, slice(a, b), slice(lo, idx[b - 1] - kc * chunk + 1, step or 1)))
        a = b
    return runs


def _fill(
    out: np.ndarray,
    reader: ChunkSource,
    plan: CutoutPlan,
    t_index: int,
    zruns: list[_Run],
    yruns: list[_Run],
    xruns: list[_Run],
    batch_bytes: int = FETCH_BATCH_BYTES,
) -> None:
    """Copy the selected values of the given runs into ``out`` (z positions relative to the first run)."""
    meta = reader.meta
    chunk_bytes = (
        math.prod(meta.array_chunks(plan.variable)[1:])
        * np.dtype(meta.variables[plan.variable].dtype).itemsize
    )
    row_chunks = len({xr.chunk for xr in xruns})
    # Rows of chunks along x are fetched in batches of about batch_bytes: memory stays bounded, and
    # the reader fetches the missing chunks of a batch together (concurrently on object stores).
    rows_per_batch = max(1, batch_bytes // (row_chunks * chunk_bytes))
    z0 = zruns[0].out.start
    for zr in zruns:
        zo = slice(zr.out.start - z0, zr.out.stop - z0)
        for b in range(0, len(yruns), rows_per_batch):
            batch = yruns[b : b + rows_per_batch]
            keys = list(dict.fromkeys((zr.chunk, yr.chunk, xr.chunk) for yr in batch for xr in xruns))
            blocks = dict(zip(keys, reader.chunks(plan.variable, t_index, keys), strict=True))
            for yr in batch:
                for xr in xruns:
                    block = blocks[(zr.chunk, yr.chunk, xr.chunk)]
                    out[zo, yr.out, xr.out] = block[zr.local, yr.local, xr.local]


def _check_time(t_index: int, ntimes: int) -> int:
    t = int(t_index)
    if not 0 <= t < ntimes:
        raise OutOfDomain(f"time index must be in [0, {ntimes - 1}]; got {t}")
    return t


def _prepare(reader: ChunkSource, variable: str | CutoutPlan, t_index: int, x: RangeSpec, y: RangeSpec,
             z: RangeSpec) -> tuple[CutoutPlan, int, list[_Run], list[_Run], list[_Run]]:
    """The plan, the checked time index and the z, y, x chunk runs of one cutout read."""
    meta = reader.meta
    plan = variable if isinstance(variable, CutoutPlan) else plan_cutout(meta, variable, x, y, z)
    t = _check_time(t_index, len(meta.times))
    cz, cy, cx = meta.array_chunks(plan.variable)[1:4]
    return plan, t, _runs(plan.z, cz), _runs(plan.y, cy), _runs(plan.x, cx)


@dataclass(frozen=True)
class CutoutBlock:
    """A z-slab of a cutout: ``data`` holds output z positions ``[z_start, z_start + len(data))``."""

    z_start: int
    data: np.ndarray


def iter_cutout_blocks(reader: ChunkSource, variable: str | CutoutPlan, t_index: int, x: RangeSpec = None,
                       y: RangeSpec = None, z: RangeSpec = None,
                       max_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[CutoutBlock]:
    """Yield a cutout as z-slabs in order, each at most about ``max_bytes`` (at least one chunk layer).

    Parameters
    ----------
    reader : ChunkReader
        The storage reader (``reader.meta`` and ``reader.chunks`` are used).
    variable : str or CutoutPlan
        A variable name (ranges are then parsed from ``x``, ``y``, ``z``) or a ready plan.
    t_index : int
        Index of the stored time.
    max_bytes : int
        Target size of one yielded block.

    Yields
    ------
    CutoutBlock
    """
    plan, t, zruns, yruns, xruns = _prepare(reader, variable, t_index, x, y, z)
    layer_bytes = 4 * plan.y.count * plan.x.count * len(plan.components)
    i = 0
    while i < len(zruns):
        # Group whole runs (one chunk layer each) until the slab reaches max_bytes.
        j, rows = i, 0
        while j < len(zruns) and (j == i or (rows + _len(zruns[j].out)) * layer_bytes <= max_bytes):
            rows += _len(zruns[j].out)
            j += 1
        out = np.empty((rows, *plan.shape[1:]), dtype=np.float32)
        _fill(out, reader, plan, t, zruns[i:j], yruns, xruns)
        yield CutoutBlock(zruns[i].out.start, out)
        i = j


def _len(s: slice) -> int:
    return s.stop - s.start


def read_cutout(reader: ChunkSource, variable: str | CutoutPlan, t_index: int, x: RangeSpec = None,
                y: RangeSpec = None, z: RangeSpec = None) -> Cutout:
    """Read a cutout of one variable at one stored time.

    Parameters
    ----------
    reader : ChunkReader
        The storage reader for the dataset.
    variable : str or CutoutPlan
        Variable name, or a plan from :func:`plan_cutout`.
    t_index : int
        Index of the stored time (see :func:`time_index`).
    x, y, z : str, tuple, slice or None
        Index ranges, ``start:stop:step``; 0-based, stop exclusive, whole axis when None.

    Returns
    -------
    Cutout
        ``data`` has shape (nz', ny', nx', ncomp), float32.
    """
    plan, t, zruns, yruns, xruns = _prepare(reader, variable, t_index, x, y, z)
    out = np.empty(plan.shape, dtype=np.float32)
    _fill(out, reader, plan, t, zruns, yruns, xruns)
    return Cutout(out, plan, float(reader.meta.times[t]), t)
