"""Reading an ingest's sources: HDF5 files per time step, their datasets, and coordinate files.

Every error names the variable, the component, the time step, the file and the descriptor, so the user
knows which line of the descriptor or which file to fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from labservice.errors import InvalidInput, NotFound, suggest
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
        return Path(resolve(self.base, self.spec.source.files.format(t=t)))

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


