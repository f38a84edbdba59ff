"""What a cutout output file holds: variables over one region, at one or more stored times.

A :class:`CutoutLayout` is the header every writer needs before the first byte of data: the region,
coordinates, variables, times and attributes. Data then arrives as blocks ``(variable, time, z-slab)``,
either from in-memory :class:`Cutout` objects or streamed from storage, so big cutouts are written with
bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labservice.cutout.region import Cutout, CutoutPlan, iter_cutout_blocks
from labservice.errors import InvalidInput, OutOfDomain

# (variable position, time position, first output z, block of shape (nz_block, ny, nx, ncomp))
Block = tuple[int, int, int, np.ndarray]


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
    """

    plans: tuple[CutoutPlan, ...]
    times: tuple[float, ...]
    t_indices: tuple[int, ...]

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
    def multi_time(self) -> bool:
        """Whether outputs carry a leading time dimension (more than one time)."""
        return len(self.times) > 1

    @property
    def variables(self) -> list[str]:
        return [p.variable for p in self.plans]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(nz, ny, nx)."""
        return self.region.shape[:3]

    def shape(self, plan: CutoutPlan) -> tuple[int, ...]:
        """Array shape of one variable in the output: ([nt,] nz, ny, nx, ncomp)."""
        lead = (len(self.times),) if self.multi_time else ()
        return (*lead, *plan.shape)

    def dims(self, plan: CutoutPlan) -> tuple[str, ...]:
        lead = ("time",) if self.multi_time else ()
        return (*lead, "z", "y", "x", self.component_dim(plan))

    def component_dim(self, plan: CutoutPlan) -> str:
        """``component`` when all variables share one component list, else ``component_<variable>``."""
        if all(p.components == self.plans[0].components for p in self.plans):
            return "component"
        return f"component_{plan.variable}"

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
        if not self.multi_time:
            out["time"] = float(self.times[0])
            out["time_index"] = int(self.t_indices[0])
        if len(self.plans) == 1:
            out["variable"] = r.variable
            out["components"] = list(r.components)
            out["units"] = r.units
        return out

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
            yield vi, ti, 0, by_key[(plan.variable, t)].data


def blocks_from_reader(layout: CutoutLayout, reader: Any, max_bytes: int = 64 * 2**20) -> Iterator[Block]:
    """Blocks read from storage z-slab by z-slab, in layout order; memory stays near ``max_bytes``."""
    for vi, plan in enumerate(layout.plans):
        for ti, t in enumerate(layout.t_indices):
            for b in iter_cutout_blocks(reader, plan, t, max_bytes=max_bytes):
                yield vi, ti, b.z_start, b.data


def layout_for(
    reader: Any, plans: CutoutPlan | Iterable[CutoutPlan], t_indices: int | Iterable[int]
) -> CutoutLayout:
    """Layout of a cutout still to be read: ``plans`` from :func:`plan_cutout`, stored time indices."""
    meta = reader.meta
    plan_list = (plans,) if isinstance(plans, CutoutPlan) else tuple(plans)
    t_list = (
        (int(t_indices),) if isinstance(t_indices, (int, np.integer)) else tuple(int(t) for t in t_indices)
    )
    for t in t_list:
        if not 0 <= t < len(meta.times):
            raise OutOfDomain(f"time index must be in [0, {len(meta.times) - 1}]; got {t}")
    return CutoutLayout(plan_list, tuple(float(meta.times[t]) for t in t_list), t_list)
