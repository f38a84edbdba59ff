"""The HDF5 back end: the same logical layout as the zarr one, in a single ``.h5`` file.

- root attribute ``labservice``: the DatasetMeta as JSON;
- one chunked dataset per variable, ``[t, z, y, x, c]``, chunk = one inner chunk, fletcher32 checksums,
  NaN fill; chunks are written in Morton order of their indices, so HDF5 (which allocates a chunk when
  it is first written) lays them out in the file in Morton order within every written box;
- group ``_labservice_done``: one attribute per completely written shard (resumable ingest).

Local files are used directly. Remote URLs (``memory://``, ``s3://``) are read through fsspec file
objects; writing to them works on a local temporary copy that is uploaded whenever the data must be
durable (after a shard mark, a metadata update, and on close).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from typing import Any, ClassVar

import fsspec
import h5py
import numpy as np

from labservice.errors import InvalidInput
from labservice.storage import _common as common
from labservice.storage.base import FieldStore
from labservice.storage.metadata import DatasetMeta
from labservice.storage.morton import morton_argsort

MARKS = "_labservice_done"

__all__ = ["HDF5Store"]


def _is_checksum_error(exc: OSError) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("filter", "checksum", "fletcher"))


class HDF5Store(FieldStore):
    """A dataset stored as one HDF5 file (local path, or ``memory://``/``s3://`` through fsspec)."""

    backend: ClassVar[str] = "hdf5"

    def __init__(self, url: str, file: h5py.File, meta: DatasetMeta, remote: tuple[Any, str, str] | None,
                 handle: Any = None, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options  # kept so other processes (jobs) can reopen the store
        self.meta = meta
        self._file = file
        self._remote = remote  # (filesystem, remote path, local temp path) when writing a remote file
        self._handle = handle  # fsspec file object when reading a remote file
        self._lock = threading.RLock()
        self.writable = file.mode == "r+"
        self.cache_token = f"{url}#{uuid.uuid4().hex}"

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, url: str, meta: DatasetMeta, storage_options: dict[str, Any] | None = None, overwrite: bool = False
    ) -> HDF5Store:
        remote = None
        with common.remote_errors(url, "creating the dataset"):
            if common.is_local(url):
                path = common.local_path(url)
                if os.path.exists(path) and not overwrite:
                    raise InvalidInput(f"a dataset already exists at {url}; pass overwrite=True to replace it")
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            else:
                fs, rpath = fsspec.core.url_to_fs(url, **(storage_options or {}))
                if fs.exists(rpath) and not overwrite:
                    raise InvalidInput(f"a dataset already exists at {url}; pass overwrite=True to replace it")
                path = _temp_path()
                remote = (fs, rpath, path)
            # v108: new-style groups (dense attributes for many shard marks) without the v110 superblock, whose
            # "open for write" flag would travel with a copy uploaded while the file is still open.
            f = h5py.File(path, "w", libver=("v108", "v108"), locking=False)
            f.attrs[common.META_KEY] = json.dumps(meta.model_dump(mode="json"))
            f.create_group(MARKS)
            for name, var in meta.variables.items():
                ds = f.create_dataset(
                    name,
                    shape=meta.array_shape(name),
                    dtype=np.dtype(var.dtype).newbyteorder("<"),
                    chunks=meta.array_chunks(name),
                    fletcher32=True,
                    fillvalue=np.nan,
                )
                ds.attrs["components"] = json.dumps(var.components)
                ds.attrs["units"] = var.units
            store = cls(url, f, meta, remote, storage_options=storage_options)
            store._publish()
        return store

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any] | None = None, mode: str = "r") -> HDF5Store:
        if mode not in ("r", "r+"):
            raise InvalidInput(f"mode must be 'r' or 'r+'; got {mode!r}")
        remote = handle = None
        with common.remote_errors(url, "opening the dataset"):
            try:
                if common.is_local(url):
                    f = h5py.File(common.local_path(url), mode, locking=False)
                else:
                    fs, rpath = fsspec.core.url_to_fs(url, **(storage_options or {}))
                    if mode == "r":
                        handle = fs.open(rpath, "rb", block_size=1 << 20, cache_type="readahead")
                        f = h5py.File(handle, "r")
                    else:
                        path = _temp_path()
                        fs.get(rpath, path)
                        remote = (fs, rpath, path)
                        f = h5py.File(path, "r+", locking=False)
            except (FileNotFoundError, OSError) as exc:
                if isinstance(exc, FileNotFoundError) or "unable to open" in str(exc).lower():
                    raise common.not_found(url, exc) from exc
                raise
        if common.META_KEY not in f.attrs:
            f.close()
            raise common.not_found(url, ValueError(f"the HDF5 file has no {common.META_KEY!r} attribute"))
        meta = DatasetMeta.model_validate(json.loads(f.attrs[common.META_KEY]))
        return cls(url, f, meta, remote, handle, storage_options)

    def _publish(self) -> None:
        """Make the written data durable: flush, and upload the local copy of a remote file."""
        with self._lock:
            self._file.flush()
            if self._remote is not None:
                fs, rpath, path = self._remote
                with common.remote_errors(self.url, "uploading the HDF5 file"):
                    fs.put(path, rpath)

    def update_meta(self, meta: DatasetMeta) -> None:
        with self._lock:
            self._file.attrs[common.META_KEY] = json.dumps(meta.model_dump(mode="json"))
            self.meta = meta
            self._publish()

    def close(self) -> None:
        with self._lock:
            if not self._file.id.valid:
                return
            if self.writable:
                self._publish()
            self._file.close()
            if self._handle is not None:
                self._handle.close()
            if self._remote is not None:
                os.unlink(self._remote[2])

    # -- data --------------------------------------------------------------------------------------
    def _dataset(self, variable: str) -> h5py.Dataset:
        common.check_variable(self.meta, variable)
        return self._file[variable]

    def read_box(self, variable: str, t: int, z: slice, y: slice, x: slice) -> np.ndarray:
        z, y, x = common.check_read(self.meta, variable, t, z, y, x)
        ds = self._file[variable]
        try:
            with self._lock, common.remote_errors(self.url, f"reading {variable!r}"):
                return ds[t, z, y, x, :]
        except OSError as exc:
            if not _is_checksum_error(exc):
                raise
            self._raise_first_corrupt(variable, t, z, y, x, exc)
            raise

    def _raise_first_corrupt(self, variable: str, t: int, z: slice, y: slice, x: slice, exc: Exception) -> None:
        cz, cy, cx = self.meta.array_chunks(variable)[1:4]
        shape = self.meta.grid.array_shape
        ds = self._dataset(variable)
        for iz in range(z.start // cz, -(-z.stop // cz)):
            for iy in range(y.start // cy, -(-y.stop // cy)):
                for ix in range(x.start // cx, -(-x.stop // cx)):
                    sl = [slice(i * c, min((i + 1) * c, n)) for i, c, n in zip((iz, iy, ix), (cz, cy, cx), shape, strict=False)]
                    try:
                        with self._lock:
                            ds[t, sl[0], sl[1], sl[2], :]
                    except OSError as inner:
                        raise common.corrupt(self.meta, self.url, variable, t, (iz, iy, ix), inner) from exc
        raise common.corrupt(self.meta, self.url, variable, t, (z.start // cz, y.start // cy, x.start // cx), exc)

    def read_chunks(self, variable: str, t: int, coords: list[tuple[int, int, int]]) -> tuple[list[np.ndarray], int]:
        """Read whole inner chunks (iz, iy, ix); returns the arrays (clipped to the grid) and bytes read.

        h5py serialises all calls behind one lock, so the chunks are read one after another.
        """
        ds = self._dataset(variable)
        common.check_time(self.meta, t)
        cz, cy, cx = self.meta.array_chunks(variable)[1:4]
        shape = self.meta.grid.array_shape
        out = []
        nbytes = 0
        for c in coords:
            sl = [slice(i * n, min((i + 1) * n, m)) for i, n, m in zip(c, (cz, cy, cx), shape, strict=False)]
            try:
                with self._lock, common.remote_errors(self.url, f"reading {variable!r}"):
                    a = ds[t, sl[0], sl[1], sl[2], :]
                    info = ds.id.get_chunk_info_by_coord((t, sl[0].start, sl[1].start, sl[2].start, 0))
            except OSError as exc:
                if not _is_checksum_error(exc):
                    raise
                raise common.corrupt(self.meta, self.url, variable, t, c, exc) from exc
            out.append(a)
            nbytes += info.size or 0  # stored size: the whole (unclipped) chunk plus its fletcher32 sum
        return out, nbytes

    def write_box(self, variable: str, t: int, z0: int, y0: int, x0: int, data: np.ndarray) -> None:
        if not self.writable:
            raise InvalidInput(f"the dataset at {self.url} is open read-only; open it with mode='r+'")
        common.check_write(self.meta, variable, t, (z0, y0, x0), data)
        ds = self._dataset(variable)
        cz, cy, cx = self.meta.array_chunks(variable)[1:4]
        nz, ny, nx = data.shape[:3]
        # Write chunk by chunk in Morton order of the chunk indices, so the file stores them that way.
        iz, iy, ix = np.meshgrid(
            np.arange(z0 // cz, -(-(z0 + nz) // cz)),
            np.arange(y0 // cy, -(-(y0 + ny) // cy)),
            np.arange(x0 // cx, -(-(x0 + nx) // cx)),
            indexing="ij",
        )
        iz, iy, ix = iz.ravel(), iy.ravel(), ix.ravel()
        with self._lock:
            for k in morton_argsort(ix, iy, iz):
                lo = (max(z0, iz[k] * cz), max(y0, iy[k] * cy), max(x0, ix[k] * cx))
                hi = (min(z0 + nz, (iz[k] + 1) * cz), min(y0 + ny, (iy[k] + 1) * cy), min(x0 + nx, (ix[k] + 1) * cx))
                ds[t, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], :] = data[
                    lo[0] - z0 : hi[0] - z0, lo[1] - y0 : hi[1] - y0, lo[2] - x0 : hi[2] - x0
                ]
            self._file.flush()  # so other handles on the same file see the data
            self.cache_token = f"{self.url}#{uuid.uuid4().hex}"

    # -- resumable ingest --------------------------------------------------------------------------
    @staticmethod
    def _mark(variable: str, t: int, shard: tuple[int, int, int]) -> str:
        return f"{variable}:{t}:{shard[0]}.{shard[1]}.{shard[2]}"

    def shard_done(self, variable: str, t: int, shard: tuple[int, int, int]) -> bool:
        s = common.check_shard(self.meta, variable, t, shard)
        with self._lock:
            return self._mark(variable, t, s) in self._file[MARKS].attrs

    def mark_shard_done(self, variable: str, t: int, shard: tuple[int, int, int]) -> None:
        s = common.check_shard(self.meta, variable, t, shard)
        if not self.writable:
            raise InvalidInput(f"the dataset at {self.url} is open read-only; open it with mode='r+'")
        with self._lock:
            self._file.flush()  # the shard's data first, then its mark
            self._file[MARKS].attrs[self._mark(variable, t, s)] = np.uint8(1)
            self._publish()


def _temp_path() -> str:
    fd, path = tempfile.mkstemp(suffix=".h5", prefix="labservice-")
    os.close(fd)
    return path
