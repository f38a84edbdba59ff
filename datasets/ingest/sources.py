"""Reading an ingest's sources: HDF5 files per time step, their datasets, and coordinate files.

Every error names the variable, the component, the time step, the file and the descriptor, so the user
knows which line of the descriptor or which file to fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from labservice.errors import InvalidInput, LabError, NotFound, StorageUnavailable, suggest
from labservice.storage.metadata import DatasetMeta

if TYPE_CHECKING:
    from labservice.datasets.ingest.descriptor import VariableSpec


def resolve(base: Path, target: str) -> str:
    """Relative local paths resolve against the descriptor's folder; URLs pass through."""
    if "://" in target:
        return target
    p = Path(os.path.expanduser(target))
    return str(p if p.is_absolute() else (base / p).resolve())


def read_coordinates(base: Path, spec: str, where: str, descriptor: Path) -> list[float]:
    """Values of ``file.h5:/dataset``."""
    if ":" not in spec:
        raise InvalidInput(
            f"{where}: write coordinates as 'file.h5:/dataset' or an inline list; got {spec!r} (descriptor {descriptor})"
        )
    file, dataset = spec.rsplit(":", 1)
    path = Path(resolve(base, file))
    with _open_h5(path, where) as f:
        values = np.asarray(_dataset(f, dataset, path, where)[()], dtype=np.float64)
    if values.ndim != 1:
        raise InvalidInput(f"{where}: {path}:{dataset} must be one-dimensional; it has shape {values.shape}")
    return values.tolist()


# -- reading the sources ---------------------------------------------------------------------------------
def _is_remote(path: str | Path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def _open_remote_h5(url: str, where: str, storage_options: dict[str, Any] | None) -> h5py.File:
    """An HDF5 file on any fsspec URL (s3://, gs://, http://...), read through a buffered file object."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if not fs.isfile(path):
            raise NotFound(f"{where}: file {url} not found")
        handle = fs.open(path, "rb", block_size=8 << 20)
    except LabError:
        raise
    except Exception as exc:
        raise StorageUnavailable(f"{where}: cannot read {url} ({exc})") from exc
    try:
        return h5py.File(handle, "r")
    except OSError as exc:
        handle.close()
        raise InvalidInput(f"{where}: {url} is not a readable HDF5 file ({exc})") from None


def _open_h5(path: str | Path, where: str, storage_options: dict[str, Any] | None = None) -> h5py.File:
    if _is_remote(path):
        return _open_remote_h5(str(path), where, storage_options)
    path = Path(str(path).removeprefix("file://"))
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
    """The open file of one time step and the checked datasets of one variable in it, with a memory map of
    each dataset whose bytes lie in the file as one native, unfiltered block (else None)."""

    file: h5py.File
    datasets: list[h5py.Dataset]
    maps: list[np.ndarray | None]


def _memory_map(path: Path, ds: h5py.Dataset) -> np.ndarray | None:
    """The dataset's values as a read-only memory map: no copy, and reading it releases the GIL."""
    offset = ds.id.get_offset()
    plist = ds.id.get_create_plist()
    if (
        offset is None  # never written: h5py gives the fill value
        or plist.get_layout() != h5py.h5d.CONTIGUOUS
        or plist.get_nfilters()
        or plist.get_external_count()
        or not ds.dtype.isnative
        or ds.size == 0
    ):
        return None
    return np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape).view(np.ndarray)


class VariableSource:
    """Reads slabs of one variable from its source files, in [z, y, x, component] order."""

    def __init__(
        self,
        name: str,
        spec: VariableSpec,
        meta: DatasetMeta,
        base: Path,
        descriptor: Path,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        # fsspec options for source files on remote URLs (the source's own, else the descriptor's).
        self.storage_options = spec.source.storage_options or storage_options
        self.spec = spec
        self.meta = meta
        self.base = base
        self.descriptor = descriptor
        self.dtype = np.dtype(spec.dtype)

    def path(self, t: int) -> Path | str:
        """The local file of time step t, or its URL when it is remote."""
        target = resolve(self.base, self.spec.source.files.format(t=t))
        return target if _is_remote(target) else Path(target.removeprefix("file://"))

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
        f = _open_h5(path, self._where(t), self.storage_options)
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
            maps = [_memory_map(path, ds) if isinstance(path, Path) else None for ds in datasets]
        except BaseException:
            f.close()
            raise
        return OpenSource(f, datasets, maps)

    def components(
        self, handle: OpenSource, t: int, lo: tuple[int, int, int], hi: tuple[int, int, int]
    ) -> list[np.ndarray]:
        """The box [lo, hi) (z, y, x) at time step t as one (nz, ny, nx) array per component, in the source's
        dtype: views of the memory maps where there are some (no copy), else read through h5py."""
        src = self.spec.source
        zs, ys, xs = (slice(a, b) for a, b in zip(lo, hi, strict=True))
        space = (zs, ys, xs) if src.order == "zyx" else (xs, ys, zs)
        lead = () if src.per_time_step else (t,)
        arrays: list[np.ndarray] = []
        for ds, mapped in zip(handle.datasets, handle.maps, strict=True):
            values = ds if mapped is None else mapped
            if src.layout == "separate":
                parts = [values[(*lead, *space)]]
            elif src.layout == "last":
                block = values[(*lead, *space, slice(None))]
                parts = [block[..., c] for c in range(block.shape[-1])]
            else:
                block = values[(*lead, slice(None), *space)]
                parts = list(block)
            arrays += [p if src.order == "zyx" else p.transpose(2, 1, 0) for p in parts]
        return arrays

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


