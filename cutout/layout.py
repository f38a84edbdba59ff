"""What a cutout output file holds: variables over one region, at one or more stored times.

A :class:`CutoutLayout` is the header every writer needs before the first byte of data: the region,
coordinates, variables, times and attributes. Data then arrives from a :class:`BlockSource` as
:class:`Block` boxes (variable, time, output corner, values): from in-memory :class:`Cutout` objects,
streamed from storage, or read back shard by shard from a job's zarr, so every path feeds the same
writers and big cutouts are written with bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from labservice.cutout.region import Cutout, CutoutPlan, iter_cutout_blocks
from labservice.errors import InvalidInput, OutOfDomain
from labservice.storage.metadata import DatasetMeta


class Block(NamedTuple):
    """Values of one variable at one time over a box of the output."""

    var: int  # position in ``layout.plans``
    time: int  # position in ``layout.times``
    corner: tuple[int, int, int]  # output (z, y, x) index of ``data[0, 0, 0]``
    data: np.ndarray  # (nz', ny', nx', ncomp)


@dataclass(frozen=True)
class CutoutLayout:
    """The shape of a cutout output: one plan per variable (same region) and the stored times.

    Attributes
    ----------
    plans : tuple of CutoutPlan
        One per variable, all over the same x/y/z ranges of the same dataset.
    times : tuple of float
        Stored times, in output order.
    t_indices : tuple of int
        Their indices in the dataset.
    keep_time_axis : bool
        Give one time a time axis of length 1 too (jobs, which take a list of times).
    """

    plans: tuple[CutoutPlan, ...]
    times: tuple[float, ...]
    t_indices: tuple[int, ...]
    keep_time_axis: bool = False

    def __post_init__(self) -> None:
        if not self.plans or not self.times:
            raise InvalidInput("a cutout needs at least one variable and one time")
        first = self.plans[0]
        names = [p.variable for p in self.plans]
        if len(set(names)) != len(names):
            raise InvalidInput(f"each variable may appear once in a cutout; got {names}")
        for p in self.plans[1:]:
            if (p.dataset, p.x, p.y, p.z) != (first.dataset, first.x, first.y, first.z):
                raise InvalidInput("all variables of one cutout must come from the same dataset and region")
        if len(set(self.t_indices)) != len(self.t_indices):
            raise InvalidInput(
                f"each time may appear once in a cutout; got time indices {list(self.t_indices)}"
            )

    @property
    def region(self) -> CutoutPlan:
        return self.plans[0]

    @property
    def time_axis(self) -> bool:
        """Whether outputs carry a leading time dimension (several times, or ``keep_time_axis``)."""
        return self.keep_time_axis or len(self.times) > 1

    @property
    def variables(self) -> list[str]:
        return [p.variable for p in self.plans]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(nz, ny, nx)."""
        return self.region.shape[:3]

    def shape(self, plan: CutoutPlan) -> tuple[int, ...]:
        """Array shape of one variable in the output: ([nt,] nz, ny, nx, ncomp)."""
        lead = (len(self.times),) if self.time_axis else ()
        return (*lead, *plan.shape)

    def dims(self, plan: CutoutPlan) -> tuple[str, ...]:
        lead = ("time",) if self.time_axis else ()
        return (*lead, "z", "y", "x", self.component_dim(plan))

    def component_dim(self, plan: CutoutPlan) -> str:
        """``component`` when all variables share one component list, else ``<variable>_component``
        (the spelling of the xarray backend)."""
        if all(p.components == self.plans[0].components for p in self.plans):
            return "component"
        return f"{plan.variable}_component"

    def index(self, block: Block) -> tuple[int | slice, ...]:
        """Where a block goes in its variable's output array."""
        lead: tuple[int, ...] = (block.time,) if self.time_axis else ()
        box = tuple(slice(c, c + n) for c, n in zip(block.corner, block.data.shape[:3], strict=True))
        return (*lead, *box)

    def coordinate_variables(self) -> list[tuple[str, tuple[str, ...], np.ndarray, dict[str, Any]]]:
        """Every coordinate as (name, dims, values, attrs), as NetCDF, zarr and xarray store them.

        Component names are strings (object arrays); ``time`` and ``time_index`` are scalars without
        a time axis.
        """
        out: list[tuple[str, tuple[str, ...], np.ndarray, dict[str, Any]]] = []
        for name in ("x", "y", "z"):
            out.append(
                (name, (name,), self.coords(name), {"axis": name.upper(), "long_name": f"{name} coordinate"})
            )
            out.append((f"{name}_index", (name,), self.indices(name).astype(np.int64), {}))
        tdims = ("time",) if self.time_axis else ()
        times = np.asarray(self.times if tdims else self.times[0], dtype=np.float64)
        t_idx = np.asarray(self.t_indices if tdims else self.t_indices[0], dtype=np.int64)
        out += [("time", tdims, times, {}), ("time_index", tdims, t_idx, {})]
        seen = set()
        for plan in self.plans:
            cdim = self.component_dim(plan)
            if cdim not in seen:
                seen.add(cdim)
                out.append((cdim, (cdim,), np.array(plan.components, dtype=object), {}))
        return out

    def variable_attrs(self, plan: CutoutPlan) -> dict[str, Any]:
        """A data variable's attributes in NetCDF and zarr (HDF5 has dimension scales instead)."""
        scalar_time = "" if self.time_axis else "time time_index "
        return {
            "units": plan.units,
            "components": list(plan.components),
            "coordinates": scalar_time + "x_index y_index z_index",
        }

    def coords(self, name: str) -> np.ndarray:
        """Physical coordinates along ``x``, ``y`` or ``z`` (periodic wraps shifted to keep increasing)."""
        return self.region.coords(name)

    def indices(self, name: str) -> np.ndarray:
        """Wrapped 0-based grid indices along ``x``, ``y`` or ``z``."""
        return self.region.axis_range(name).indices()

    def uniform_spacing(self, name: str) -> float | None:
        """The spacing along an axis when it is uniform, else None."""
        c = self.coords(name)
        if c.size < 2:
            ax = self.region.grid.axis(name)
            return float(ax.step * self.region.axis_range(name).step) if ax.uniform else 1.0
        d = np.diff(c)
        return float(d[0]) if np.allclose(d, d[0], rtol=1e-9, atol=0.0) else None

    def attrs(self) -> dict[str, Any]:
        """Root attributes shared by every format (JSON-friendly, no booleans or None)."""
        r = self.region
        out: dict[str, Any] = {
            "dataset": r.dataset,
            "variables": self.variables,
            "strides": list(r.strides),
            "x_range": r.x.as_text(),
            "y_range": r.y.as_text(),
            "z_range": r.z.as_text(),
            "index_base": 0,
            "layout": ",".join(self.dims(r)),
            "times": [float(t) for t in self.times],
            "time_indices": [int(t) for t in self.t_indices],
        }
        if not self.time_axis:
            out["time"] = float(self.times[0])
            out["time_index"] = int(self.t_indices[0])
        if len(self.plans) == 1:
            out["variable"] = r.variable
            out["components"] = list(r.components)
            out["units"] = r.units
        return out

    @classmethod
    def from_attrs(cls, meta: Any, attrs: dict[str, Any], keep_time_axis: bool = False) -> CutoutLayout:
        """Rebuild a layout from the root attributes a writer stored (see :meth:`attrs`) and the metadata."""
        from labservice.cutout.region import plan_cutout

        ranges = [attrs[f"{a}_range"] for a in ("x", "y", "z")]
        plans = [plan_cutout(meta, v, *ranges) for v in attrs["variables"]]
        return layout_for(meta, plans, attrs["time_indices"], keep_time_axis=keep_time_axis)

    @classmethod
    def from_cutouts(cls, cutouts: Cutout | Sequence[Cutout]) -> CutoutLayout:
        """Build the layout of in-memory cutouts (one per variable and time, same region)."""
        items = _as_list(cutouts)
        plans: dict[str, CutoutPlan] = {}
        times: dict[int, float] = {}
        for c in items:
            plans.setdefault(c.variable, c.plan)
            times.setdefault(c.t_index, c.time)
        seen = {(c.variable, c.t_index) for c in items}
        if len(seen) != len(items) or len(seen) != len(plans) * len(times):
            raise InvalidInput(
                "cutouts must hold every variable at every time exactly once "
                f"(got {len(items)} cutouts for {len(plans)} variables x {len(times)} times)"
            )
        return cls(tuple(plans.values()), tuple(times.values()), tuple(times))


def _as_list(cutouts: Cutout | Sequence[Cutout]) -> list[Cutout]:
    items = [cutouts] if isinstance(cutouts, Cutout) else list(cutouts)
    if not items:
        raise InvalidInput("no cutouts to write")
    return items


def blocks_from_cutouts(layout: CutoutLayout, cutouts: Cutout | Sequence[Cutout]) -> Iterator[Block]:
    """Blocks of in-memory cutouts, in layout order (variable, then time)."""
    by_key = {(c.variable, c.t_index): c for c in _as_list(cutouts)}
    for vi, plan in enumerate(layout.plans):
        for ti, t in enumerate(layout.t_indices):
            yield Block(vi, ti, (0, 0, 0), by_key[(plan.variable, t)].data)


def blocks_from_reader(layout: CutoutLayout, reader: Any, max_bytes: int = 64 * 2**20) -> Iterator[Block]:
    """Blocks read from storage z-slab by z-slab, in layout order; memory stays near ``max_bytes``."""
    for vi, plan in enumerate(layout.plans):
        for ti, t in enumerate(layout.t_indices):
            for b in iter_cutout_blocks(reader, plan, t, max_bytes=max_bytes):
                yield Block(vi, ti, (b.z_start, 0, 0), b.data)


@dataclass(frozen=True)
class BlockSource:
    """What every format writer reads: the layout (coordinates, attributes) and the data as blocks.

    ``read(planes)`` yields the blocks. With ``planes=True`` they must be whole (y, x) z-slabs, variable
    by variable in (time, z) order, as the streamed formats (npy, msgpack) need; otherwise any boxes in
    any order. ``chunks`` is an optional (z, y, x) storage chunk for the file formats to use.
    """

    layout: CutoutLayout
    read: Callable[[bool], Iterable[Block]]
    chunks: tuple[int, int, int] | None = None

    def blocks(self, planes: bool = False) -> Iterable[Block]:
        return self.read(planes)

    @classmethod
    def of_blocks(cls, layout: CutoutLayout, blocks: Iterable[Block]) -> BlockSource:
        """A one-pass source over blocks already in plane order (z-slabs, variable by variable)."""
        return cls(layout, lambda _planes: blocks)

    @classmethod
    def of_cutouts(cls, cutouts: Cutout | Sequence[Cutout]) -> BlockSource:
        layout = CutoutLayout.from_cutouts(cutouts)
        return cls(layout, lambda _planes: blocks_from_cutouts(layout, cutouts))

    @classmethod
    def of_reader(cls, reader: Any, layout: CutoutLayout, max_bytes: int = 64 * 2**20) -> BlockSource:
        return cls(layout, lambda _planes: blocks_from_reader(layout, reader, max_bytes=max_bytes))


def layout_for(
    reader: Any,
    plans: CutoutPlan | Iterable[CutoutPlan],
    t_indices: int | Iterable[int],
    keep_time_axis: bool = False,
) -> CutoutLayout:
    """Layout of a cutout still to be read: ``plans`` from :func:`plan_cutout`, stored time indices.

    ``reader`` is a ChunkReader or the DatasetMeta itself.
    """
    meta = reader if isinstance(reader, DatasetMeta) else reader.meta
    plan_list = (plans,) if isinstance(plans, CutoutPlan) else tuple(plans)
    t_list = (
        (int(t_indices),) if isinstance(t_indices, (int, np.integer)) else tuple(int(t) for t in t_indices)
    )
    for t in t_list:
        if not 0 <= t < len(meta.times):
            raise OutOfDomain(f"time index must be in [0, {len(meta.times) - 1}]; got {t}")
    return CutoutLayout(plan_list, tuple(float(meta.times[t]) for t in t_list), t_list, keep_time_axis)
