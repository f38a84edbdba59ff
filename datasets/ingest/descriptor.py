"""The ingest descriptor: its YAML schema, loading it, and one readable line per problem in it.

A YAML descriptor names the dataset, its grid and times, and where every variable's values are::

    id: mysim
    title: My simulation
    grid:
      shape: [56, 48, 40]                 # nx, ny, nz
      x: {start: 0.0, step: 0.1122}       # a uniform axis
      y: {coordinates: grid.h5:/y}        # or explicit coordinates: HDF5 file:dataset, or an inline list
      z: {start: 0.0, step: 0.1571}
      periodic: [true, false, true]
    times: {start: 0.0, step: 0.002, count: 3}   # or an explicit list
    variables:
      velocity:
        components: [ux, uy, uz]
        units: m/s
        source: {files: "snap_{t:04d}.h5", datasets: [/u, /v, /w], order: zyx}   # t = time index
    store: ./data/mysim                   # any fsspec URL
    chunks: [32, 32, 32]                  # optional
    shards: [256, 256, 256]               # optional

Optional keys beyond these: ``description``, ``backend`` (zarr or hdf5), ``storage_options``, ``extra`` and
``provenance`` at the top level; ``length`` on an axis (the period of a periodic axis with explicit
coordinates); ``units``, ``dtype`` and ``description`` on a variable; ``layout`` on a source:
``separate`` (one dataset per component, the default), ``last`` (one dataset, components on the last axis)
or ``first`` (one dataset, components on the first axis), and ``storage_options`` on a source (fsspec options
for ``files`` on a remote URL such as ``s3://bucket/run/snap_{t:04d}.h5``; default: the top-level ones). A ``files`` pattern without ``{t}`` names one
file whose datasets carry a leading time axis. Relative paths resolve against the descriptor's folder.
"""

from __future__ import annotations

import os
import string
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labservice.datasets.ingest.sources import read_coordinates
from labservice.datasets.yaml_file import read_yaml
from labservice.errors import InvalidInput, suggest
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable, check_axis_kind


# -- the descriptor schema -------------------------------------------------------------------------------
class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AxisSpec(_Spec):
    """One axis: ``{start, step}`` or ``{coordinates: "file.h5:/dataset" | [values]}``."""

    start: float | None = None
    step: float | None = Field(default=None, gt=0)
    coordinates: str | list[float] | None = None
    length: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> AxisSpec:
        check_axis_kind(self.start, self.step, self.coordinates)
        return self


class GridSpec(_Spec):
    shape: tuple[int, int, int]
    x: AxisSpec
    y: AxisSpec
    z: AxisSpec
    periodic: tuple[bool, bool, bool] = (False, False, False)

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 1:
            raise ValueError(f"every size in [nx, ny, nz] must be at least 1; got {list(v)}")
        return v


class TimeRange(_Spec):
    start: float
    step: float = Field(gt=0)
    count: int = Field(ge=1)

    def values(self) -> list[float]:
        # Rounded so that 0.1 * 3 is stored as 0.3, as a user would write it.
        return [round(self.start + i * self.step, 12) for i in range(self.count)]


class SourceSpec(_Spec):
    """Where a variable's values are: files (pattern in ``t``), dataset paths, axis order, component layout."""

    files: str
    datasets: list[str] = Field(min_length=1)
    order: Literal["zyx", "xyz"] = "zyx"
    layout: Literal["separate", "last", "first"] = "separate"
    storage_options: dict[str, Any] | None = None  # fsspec options when files are remote URLs

    @field_validator("files")
    @classmethod
    def _pattern(cls, v: str) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        if fields - {"t"}:
            raise ValueError(
                f"the only placeholder allowed is {{t}} (the time index); got {sorted(fields - {'t'})}"
            )
        try:
            v.format(t=0)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{v!r} is not a valid pattern such as 'snap_{{t:04d}}.h5': {exc}") from None
        return v

    @property
    def per_time_step(self) -> bool:
        """True when every time step has its own file; else one file holds a leading time axis."""
        return any(f == "t" for _, f, _, _ in string.Formatter().parse(self.files))


class VariableSpec(_Spec):
    components: list[str] = Field(min_length=1)
    units: str = ""
    dtype: Literal["float32", "float64"] = "float32"
    description: str = ""
    source: SourceSpec

    @model_validator(mode="after")
    def _datasets_match(self) -> VariableSpec:
        n, nd = len(self.components), len(self.source.datasets)
        if self.source.layout == "separate" and nd != n:
            raise ValueError(
                f"source.datasets lists {nd} datasets for {n} components {self.components}; give one per "
                "component, or one dataset with layout: last (or first)"
            )
        if self.source.layout != "separate" and nd != 1:
            raise ValueError(
                f"layout {self.source.layout!r} takes one dataset holding all components; got {nd}"
            )
        return self


class Descriptor(_Spec):
    """A validated ingest descriptor."""

    id: str
    title: str
    description: str = ""
    grid: GridSpec
    times: TimeRange | list[float]
    variables: dict[str, VariableSpec] = Field(min_length=1)
    store: str
    chunks: tuple[int, int, int] | None = None
    shards: tuple[int, int, int] | None = None
    backend: Literal["zarr", "hdf5"] | None = None
    storage_options: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)

    def time_values(self) -> list[float]:
        return self.times.values() if isinstance(self.times, TimeRange) else [float(t) for t in self.times]


# -- loading and checking a descriptor ------------------------------------------------------------------
def load_descriptor(path: str | os.PathLike[str]) -> Descriptor:
    """Read and validate a descriptor file; every problem becomes one ``InvalidInput`` naming the key.

    Parameters
    ----------
    path : path-like
        The YAML file.

    Returns
    -------
    Descriptor
    """
    path = Path(path)
    raw = read_yaml(path, "descriptor")
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"descriptor {path} must be a YAML mapping with keys id, title, grid, times, variables, store"
        )
    try:
        return Descriptor.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"descriptor {path} is not valid:\n" + _explain(exc)) from None


_UNION_TAGS = {"TimeRange", "str", "int", "float", "bool"}


def _explain(exc: ValidationError) -> str:
    """One line per problem: the key path and what to change, with 'did you mean' for unknown keys."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # Drop pydantic's union branch names (e.g. 'TimeRange', 'list[float]') from the key path.
        keys = [p for p in loc if p not in _UNION_TAGS and "[" not in p]
        where = ".".join(keys) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = ".".join(keys[:-1]) or "the top level"
            allowed = _allowed_keys(keys[:-1])
            lines.append(
                f"  {where}: unknown key {keys[-1]!r} in {parent}.{suggest(keys[-1], allowed)}"
                f" Allowed keys: {', '.join(allowed)}."
            )
        elif err["type"] == "missing":
            lines.append(f"  {where}: this key is required")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = repr(err.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."
            lines.append(f"  {where}: {msg}; got {got}" if keys else f"  {msg}")
    return "\n".join(dict.fromkeys(lines))


def _allowed_keys(path: list[str]) -> list[str]:
    """The keys the schema allows at a key path (names of variables are skipped over)."""
    model: type[BaseModel] = Descriptor
    for key in path:
        field = model.model_fields.get(key)
        if field is None:  # a user-chosen name, such as a variable's: its value is the current model
            continue
        model = next((m for m in _models_in(field.annotation)), model)
    return list(model.model_fields)


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def build_meta(
    desc: Descriptor, base: str | os.PathLike[str], descriptor: str | os.PathLike[str] = ""
) -> DatasetMeta:
    """The dataset metadata a descriptor describes, with coordinate files read.

    Parameters
    ----------
    desc : Descriptor
    base : path-like
        The folder relative paths resolve against (the descriptor's folder).
    descriptor : path-like
        Named in error messages.
    """
    base = Path(base)
    axes = {}
    for i, name in enumerate("xyz"):
        spec: AxisSpec = getattr(desc.grid, name)
        where = f"grid.{name}"
        coords = spec.coordinates
        if isinstance(coords, str):
            coords = read_coordinates(base, coords, f"{where}.coordinates", Path(descriptor))
        try:
            axes[name] = Axis(
                size=desc.grid.shape[i],
                periodic=desc.grid.periodic[i],
                start=spec.start,
                step=spec.step,
                coordinates=coords,
                length=spec.length,
            )
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            src = f" ({spec.coordinates})" if isinstance(spec.coordinates, str) else ""
            raise InvalidInput(
                f"descriptor {descriptor}: {where}{src}: {msg} (grid.shape gives "
                f"n{name} = {desc.grid.shape[i]})"
            ) from None
    kwargs: dict[str, Any] = {}
    if desc.chunks is not None:
        kwargs["chunks"] = desc.chunks
    if desc.shards is not None:
        kwargs["shards"] = desc.shards
    try:
        return DatasetMeta(
            id=desc.id,
            title=desc.title,
            description=desc.description,
            grid=Grid(**axes),
            times=desc.time_values(),
            variables={
                n: Variable(components=v.components, units=v.units, dtype=v.dtype, description=v.description)
                for n, v in desc.variables.items()
            },
            provenance=dict(desc.provenance),
            extra=dict(desc.extra),
            **kwargs,
        )
    except ValidationError as exc:
        raise InvalidInput(f"descriptor {descriptor} is not valid:\n" + _explain(exc)) from None


