"""Ingest: turn simulation output (HDF5 files) into a labservice dataset, shard by shard, resumably.

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
or ``first`` (one dataset, components on the first axis). A ``files`` pattern without ``{t}`` names one
file whose datasets carry a leading time axis. Relative paths resolve against the descriptor's folder.

Ingest reads only the slab of the source files that one shard needs, writes it, then marks the shard done,
so memory stays bounded by one shard and a re-run skips the shards already finished.
"""

from __future__ import annotations

import datetime as _dt
import os
import string
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from labservice.errors import InvalidInput, NotFound, suggest
from labservice.storage import create_store, open_store
from labservice.storage.base import FieldStore
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable
from labservice.storage.morton import morton_argsort

__all__ = [
    "AxisSpec",
    "Descriptor",
    "GridSpec",
    "IngestStats",
    "SourceSpec",
    "TimeRange",
    "VariableSource",
    "VariableSpec",
    "build_meta",
    "ingest",
    "ingest_descriptor",
    "load_descriptor",
    "shard_order",
]


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
        uniform = self.start is not None and self.step is not None
        if uniform == (self.coordinates is not None):
            raise ValueError("give either start and step (a uniform axis) or coordinates, not both")
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
    if not path.is_file():
        raise NotFound(f"descriptor file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInput(f"descriptor {path} is not valid YAML: {exc}") from None
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


def _resolve(base: Path, target: str) -> str:
    """Relative local paths resolve against the descriptor's folder; URLs pass through."""
    if "://" in target:
        return target
    p = Path(os.path.expanduser(target))
    return str(p if p.is_absolute() else (base / p).resolve())


def _read_coordinates(base: Path, spec: str, where: str, descriptor: Path) -> list[float]:
    """Values of ``file.h5:/dataset``."""
    if ":" not in spec:
        raise InvalidInput(
            f"{where}: write coordinates as 'file.h5:/dataset' or an inline list; got {spec!r} (descriptor {descriptor})"
        )
    file, dataset = spec.rsplit(":", 1)
    path = Path(_resolve(base, file))
    with _open_h5(path, where) as f:
        values = np.asarray(_dataset(f, dataset, path, where)[()], dtype=np.float64)
    if values.ndim != 1:
        raise InvalidInput(f"{where}: {path}:{dataset} must be one-dimensional; it has shape {values.shape}")
    return values.tolist()


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
            coords = _read_coordinates(base, coords, f"{where}.coordinates", Path(descriptor))
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


# -- reading the sources ---------------------------------------------------------------------------------
def _open_h5(path: Path, where: str) -> h5py.File:
    if not path.is_file():
        raise NotFound(f"{where}: file {path} not found")
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise InvalidInput(f"{where}: {path} is not a readable HDF5 file ({exc})") from None


def _dataset(f: h5py.File, name: str, path: Path, where: str) -> h5py.Dataset:
    key = "/" + name.lstrip("/")
    obj = f.get(key)
    if isinstance(obj, h5py.Dataset):
        return obj
    found: list[str] = []
    f.visititems(
        lambda n, o: found.append("/" + n) if isinstance(o, h5py.Dataset) and len(found) < 50 else None
    )
    same_but_case = [n for n in found if n.lower() == key.lower()]
    hint = f" Did you mean {same_but_case[0]!r}?" if same_but_case else suggest(key, found)
    raise NotFound(
        f"{where}: {path} has no dataset {key!r}.{hint} Datasets in the file: {', '.join(found) or '(none)'}."
    )


@dataclass
class OpenSource:
    """The open file of one time step and the checked datasets of one variable in it."""

    file: h5py.File
    datasets: list[h5py.Dataset]


class VariableSource:
    """Reads slabs of one variable from its source files, in [z, y, x, component] order."""

    def __init__(
        self, name: str, spec: VariableSpec, meta: DatasetMeta, base: Path, descriptor: Path
    ) -> None:
        self.name = name
        self.spec = spec
        self.meta = meta
        self.base = base
        self.descriptor = descriptor
        self.dtype = np.dtype(spec.dtype)

    def path(self, t: int) -> Path:
        return Path(_resolve(self.base, self.spec.source.files.format(t=t)))

    def expected_shape(self) -> tuple[tuple[int, ...], str]:
        """The shape each source dataset must have, and its axis names."""
        nx, ny, nz = self.meta.grid.shape
        src = self.spec.source
        shape, names = (
            ((nz, ny, nx), ["nz", "ny", "nx"]) if src.order == "zyx" else ((nx, ny, nz), ["nx", "ny", "nz"])
        )
        nc = len(self.spec.components)
        if src.layout == "last":
            shape, names = (*shape, nc), [*names, "ncomp"]
        elif src.layout == "first":
            shape, names = (nc, *shape), ["ncomp", *names]
        if not src.per_time_step:
            shape, names = (len(self.meta.times), *shape), ["nt", *names]
        return shape, ", ".join(names)

    def _where(self, t: int, component: str | None = None) -> str:
        comp = f" component {component!r}" if component else ""
        step = f" at time index {t}" if self.spec.source.per_time_step else ""
        return f"variable {self.name!r}{comp}{step} (descriptor {self.descriptor})"

    def open(self, t: int) -> OpenSource:
        """Open the file of time step t and check every dataset's shape and type."""
        path = self.path(t)
        src = self.spec.source
        f = _open_h5(path, self._where(t))
        try:
            comps = self.spec.components if src.layout == "separate" else [None]
            shape, names = self.expected_shape()
            datasets = []
            for name, comp in zip(src.datasets, comps, strict=True):
                where = self._where(t, comp)
                ds = _dataset(f, name, path, where)
                if ds.shape != shape:
                    raise InvalidInput(
                        f"{where}: dataset {ds.name} in {path} has shape {ds.shape}; expected "
                        f"{shape} = ({names}) for order {src.order}, layout {src.layout}"
                    )
                if ds.dtype.kind not in "fiu":
                    raise InvalidInput(f"{where}: dataset {ds.name} in {path} holds {ds.dtype}, not numbers")
                datasets.append(ds)
        except BaseException:
            f.close()
            raise
        return OpenSource(f, datasets)

    def read(
        self, handle: OpenSource, t: int, lo: tuple[int, int, int], hi: tuple[int, int, int]
    ) -> np.ndarray:
        """Values of the box [lo, hi) (z, y, x) at time step t, shape (nz, ny, nx, ncomp)."""
        src = self.spec.source
        zs, ys, xs = (slice(a, b) for a, b in zip(lo, hi, strict=True))
        space = (zs, ys, xs) if src.order == "zyx" else (xs, ys, zs)
        lead = () if src.per_time_step else (t,)
        out = np.empty(
            (*(b - a for a, b in zip(lo, hi, strict=True)), len(self.spec.components)), dtype=self.dtype
        )
        if src.layout == "separate":
            for c, ds in enumerate(handle.datasets):
                block = ds[
                    (*lead, *space)
                ]  # one component at a time: the peak is one shard plus one component
                out[..., c] = block if src.order == "zyx" else block.transpose(2, 1, 0)
            return out
        # One dataset holds all components: read the block once rather than once per component.
        if src.layout == "last":
            block = handle.datasets[0][(*lead, *space, slice(None))]
        else:
            block = np.moveaxis(handle.datasets[0][(*lead, slice(None), *space)], 0, -1)
        out[...] = block if src.order == "zyx" else block.transpose(2, 1, 0, 3)
        return out


# -- the ingest loop -------------------------------------------------------------------------------------
@dataclass
class IngestStats:
    """What one ingest run did."""

    url: str
    shards_written: int = 0
    shards_skipped: int = 0
    bytes_written: int = 0
    seconds: float = 0.0


def shard_order(meta: DatasetMeta, variable: str) -> list[tuple[int, int, int]]:
    """Shard indices (sz, sy, sx) in Morton order, so neighbouring shards are written together."""
    shards = meta.array_shards(variable)[1:4]
    counts = [-(-n // s) for n, s in zip(meta.grid.array_shape, shards, strict=True)]
    sz, sy, sx = np.meshgrid(*(np.arange(c) for c in counts), indexing="ij")
    sz, sy, sx = sz.ravel(), sy.ravel(), sx.ravel()
    order = morton_argsort(sx, sy, sz)
    return [(int(sz[i]), int(sy[i]), int(sx[i])) for i in order]


def _same_layout(a: DatasetMeta, b: DatasetMeta) -> str | None:
    """The first structural difference between two metadata, or None."""
    for field in ("grid", "times", "variables", "chunks", "shards"):
        if getattr(a, field) != getattr(b, field):
            return field
    return None


def _open_existing(desc: Descriptor, meta: DatasetMeta, url: str) -> FieldStore | None:
    """The target store opened for resuming, or None when there is none yet."""
    try:
        store = open_store(url, storage_options=desc.storage_options, mode="r+")
    except NotFound:
        return None
    diff = _same_layout(store.meta, meta)
    if diff is not None:
        store.close()
        raise InvalidInput(
            f"the store at {url} already holds a dataset with a different {diff}; "
            "pass overwrite=True (labservice ingest --overwrite) to replace it"
        )
    return store


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def ingest(
    desc: Descriptor,
    base: str | os.PathLike[str],
    overwrite: bool = False,
    progress: bool = True,
    descriptor: str | os.PathLike[str] = "",
) -> IngestStats:
    """Ingest a validated descriptor; see :func:`ingest_descriptor`.

    Returns
    -------
    IngestStats
        The store URL and how many shards were written and skipped.
    """
    import time as _time

    started = _time.perf_counter()
    base = Path(base)
    meta = build_meta(desc, base, descriptor)
    url = _resolve(base, desc.store)
    if desc.backend == "hdf5" and not url.lower().endswith((".h5", ".hdf5")):
        raise InvalidInput(
            f"descriptor {descriptor}: store: with backend hdf5 the store URL must end in .h5; got {url}"
        )
    sources = {n: VariableSource(n, v, meta, base, Path(descriptor)) for n, v in desc.variables.items()}
    meta.provenance["ingest"] = {
        "descriptor": str(descriptor),
        "started": _now(),
        "complete": False,
        "sources": {n: v.source.model_dump() for n, v in desc.variables.items()},
    }
    store = None if overwrite else _open_existing(desc, meta, url)
    if store is None:
        # Check the first time step's sources before creating anything: most mistakes show up there.
        for src in sources.values():
            src.open(0).file.close()
        store = create_store(
            url, meta, backend=desc.backend, storage_options=desc.storage_options, overwrite=overwrite
        )
    stats = IngestStats(url=url)
    try:
        if store.meta.provenance.get("ingest", {}).get("complete") is not True:
            store.update_meta(meta)
        total = sum(len(shard_order(meta, n)) for n in sources) * len(meta.times)
        with tqdm(total=total, desc=f"ingest {meta.id}", unit="shard", disable=not progress) as bar:
            for t in range(len(meta.times)):
                for name, src in sources.items():
                    _ingest_step(store, src, name, t, stats, bar)
        meta.provenance["ingest"].update(complete=True, finished=_now())
        store.update_meta(meta)
    finally:
        store.close()
    stats.seconds = _time.perf_counter() - started
    return stats


def _ingest_step(
    store: FieldStore, src: VariableSource, name: str, t: int, stats: IngestStats, bar: tqdm
) -> None:
    """Write every unfinished shard of one variable at one time step."""
    meta = store.meta
    shards = shard_order(meta, name)
    todo = [s for s in shards if not store.shard_done(name, t, s)]
    stats.shards_skipped += len(shards) - len(todo)
    bar.update(len(shards) - len(todo))
    if not todo:
        return  # never open the source files of finished time steps: they may be gone
    size = meta.array_shards(name)[1:4]
    grid = meta.grid.array_shape
    handle = src.open(t)
    try:
        for shard in todo:
            lo = tuple(i * s for i, s in zip(shard, size, strict=True))
            hi = tuple(min(a + s, n) for a, s, n in zip(lo, size, grid, strict=True))
            data = src.read(handle, t, lo, hi)  # type: ignore[arg-type]
            store.write_box(name, t, *lo, data)
            store.mark_shard_done(name, t, shard)
            stats.shards_written += 1
            stats.bytes_written += data.nbytes
            bar.update(1)
    finally:
        handle.file.close()


def ingest_descriptor(path: str | os.PathLike[str], overwrite: bool = False, progress: bool = True) -> str:
    """Ingest the dataset a YAML descriptor describes and return the store URL.

    Streams shard by shard: only the slab of the source files one shard needs is in memory at a time. The
    run is resumable: shards already marked done in the store are skipped, so after a crash or a missing
    file, run it again. Bad descriptors, missing files or datasets and shape mismatches raise
    :class:`~labservice.errors.LabError` subclasses naming the file and the field.

    Parameters
    ----------
    path : path-like
        The descriptor (YAML).
    overwrite : bool
        Replace an existing store instead of resuming into it.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    str
        The store URL (relative local paths resolved against the descriptor's folder).
    """
    path = Path(path).resolve()
    desc = load_descriptor(path)
    return ingest(desc, path.parent, overwrite=overwrite, progress=progress, descriptor=path).url
