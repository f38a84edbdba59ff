"""The dataset metadata schema, stored in the Zarr group attributes (or HDF5 root attributes).

Conventions, fixed for every back end:
- arrays are indexed ``[t, z, y, x, component]``;
- ``Grid.shape`` is ``(nx, ny, nz)``; ``chunks`` and ``shards`` are given as ``(x, y, z)`` too, like the
  grid, and are reversed to the array's ``(z, y, x)`` order by :meth:`DatasetMeta.array_chunks`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT_VERSION = 1
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
AXES = ("x", "y", "z")


def check_axis_kind(start: float | None, step: float | None, coordinates: object) -> None:
    """An axis is uniform (start and step) or given by its coordinates: exactly one (ValueError if not)."""
    if (start is not None and step is not None) == (coordinates is not None):
        raise ValueError("give either start and step (a uniform axis) or coordinates, not both")


class Axis(BaseModel):
    """One grid axis: uniform (``start`` + ``step``) or explicit ``coordinates``."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=1)
    periodic: bool = False
    start: float | None = None
    step: float | None = Field(default=None, gt=0)
    coordinates: list[float] | None = None
    # Period length of a periodic axis; defaults to size * step for uniform axes.
    length: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Axis:
        check_axis_kind(self.start, self.step, self.coordinates)
        if self.coordinates is not None:
            c = np.asarray(self.coordinates, dtype=float)
            if c.size != self.size:
                raise ValueError(f"coordinates has {c.size} values but size is {self.size}")
            if not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0):
                raise ValueError("coordinates must be finite and strictly increasing")
            if self.periodic and self.length is None:
                raise ValueError("a periodic axis with explicit coordinates needs its period 'length'")
        return self

    @property
    def uniform(self) -> bool:
        return self.coordinates is None

    @property
    def period(self) -> float | None:
        if not self.periodic:
            return None
        if self.length is not None:
            return self.length
        return self.size * float(self.step)  # type: ignore[arg-type]

    def coords(self) -> np.ndarray:
        """Node coordinates as float64."""
        if self.coordinates is not None:
            return np.asarray(self.coordinates, dtype=np.float64)
        return float(self.start) + float(self.step) * np.arange(self.size, dtype=np.float64)  # type: ignore[arg-type]

    @property
    def bounds(self) -> tuple[float, float]:
        """The domain an interpolation point may lie in: [first node, last node] or one period."""
        c = self.coords()
        if self.periodic:
            return float(c[0]), float(c[0] + self.period)  # type: ignore[operator]
        return float(c[0]), float(c[-1])


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: Axis
    y: Axis
    z: Axis

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nx, ny, nz)."""
        return (self.x.size, self.y.size, self.z.size)

    @property
    def array_shape(self) -> tuple[int, int, int]:
        """(nz, ny, nx): the spatial part of the stored arrays."""
        return (self.z.size, self.y.size, self.x.size)

    def axis(self, name: str) -> Axis:
        return getattr(self, name)


class Variable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    components: list[str] = Field(min_length=1)
    units: str = ""
    dtype: Literal["float32", "float64"] = "float32"
    description: str = ""

    @property
    def ncomp(self) -> int:
        return len(self.components)


class DatasetMeta(BaseModel):
    """Everything a reader needs to know about a dataset, validated."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    id: str = Field(pattern=ID_PATTERN)
    title: str
    description: str = ""
    kind: str = "field"
    grid: Grid
    times: list[float] = Field(min_length=1)
    variables: dict[str, Variable] = Field(min_length=1)
    chunks: tuple[int, int, int] = (32, 32, 32)
    shards: tuple[int, int, int] = (256, 256, 256)
    provenance: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("times")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        t = np.asarray(v, dtype=float)
        if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
            raise ValueError("times must be finite and strictly increasing")
        return v

    @field_validator("variables")
    @classmethod
    def _names(cls, v: dict[str, Variable]) -> dict[str, Variable]:
        for name in v:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"variable name {name!r} must match {NAME_PATTERN}")
        return v

    @model_validator(mode="after")
    def _chunking(self) -> DatasetMeta:
        for c, s, axis in zip(self.chunks, self.shards, AXES, strict=True):
            if c < 1 or s < c or s % c:
                raise ValueError(f"along {axis}, shard size {s} must be a positive multiple of chunk size {c}")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is newer than this labservice reads ({FORMAT_VERSION})"
            )
        return self

    def array_chunks(self, variable: str) -> tuple[int, int, int, int, int]:
        """Inner chunk shape of a variable's array, in [t, z, y, x, c] order, clipped to the grid."""
        nz, ny, nx = self.grid.array_shape
        cx, cy, cz = self.chunks
        return (1, min(cz, nz), min(cy, ny), min(cx, nx), self.variables[variable].ncomp)

    def array_shards(self, variable: str) -> tuple[int, int, int, int, int]:
        """Shard shape of a variable's array, in [t, z, y, x, c] order, clipped to the grid."""
        nz, ny, nx = self.grid.array_shape
        sx, sy, sz = self.shards
        cz, cy, cx = self.array_chunks(variable)[1:4]
        # A clipped shard must stay a multiple of the chunk: round up to whole chunks.
        def fit(s: int, n: int, c: int) -> int:
            return min(s, -(-n // c) * c)
        return (1, fit(sz, nz, cz), fit(sy, ny, cy), fit(sx, nx, cx), self.variables[variable].ncomp)

    def array_shape(self, variable: str) -> tuple[int, int, int, int, int]:
        nz, ny, nx = self.grid.array_shape
        return (len(self.times), nz, ny, nx, self.variables[variable].ncomp)
