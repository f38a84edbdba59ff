"""Morton-ordered, chunked, checksummed storage of gridded fields on any fsspec URL.

``create_store``/``open_store`` give a :class:`FieldStore` (zarr or HDF5 back end); :class:`ChunkReader`
reads boxes through the shared :class:`ChunkCache`. Nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any

from labservice.errors import InvalidInput
from labservice.storage._common import is_local, local_path, not_found, remote_errors
from labservice.storage.base import FieldStore
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable
from labservice.storage.reader import ChunkCache, ChunkReader, default_cache

BACKENDS = ("zarr", "hdf5")
HDF5_SUFFIXES = (".h5", ".hdf5")

__all__ = [
    "BACKENDS",
    "Axis",
    "ChunkCache",
    "ChunkReader",
    "DatasetMeta",
    "FieldStore",
    "Grid",
    "Variable",
    "create_store",
    "default_cache",
    "detect_backend",
    "open_store",
]


def _backend_class(backend: str) -> type[FieldStore]:
    if backend == "zarr":
        from labservice.storage.zarr_ import ZarrStore

        return ZarrStore
    if backend == "hdf5":
        from labservice.storage.hdf5_ import HDF5Store

        return HDF5Store
    raise InvalidInput(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def create_store(
    url: str,
    meta: DatasetMeta,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> FieldStore:
    """Create an empty dataset at ``url`` (local path, ``memory://``, ``s3://``) and write its metadata.

    Parameters
    ----------
    url : str
        Where to create it. HDF5 URLs should end in ``.h5`` or ``.hdf5`` so :func:`open_store` finds
        the back end again.
    meta : DatasetMeta
        The validated metadata; fixes the arrays' shapes, chunks and shards.
    backend : {"zarr", "hdf5"}, optional
        Default: "hdf5" when the URL ends in ``.h5``/``.hdf5``, else "zarr".
    storage_options : dict, optional
        Passed to fsspec (for example the S3 endpoint and keys).
    overwrite : bool
        Replace an existing dataset instead of raising ``InvalidInput``.
    """
    if backend is None:
        backend = "hdf5" if url.rstrip("/").lower().endswith(HDF5_SUFFIXES) else "zarr"
    return _backend_class(backend).create(url, meta, storage_options=storage_options, overwrite=overwrite)


def detect_backend(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """"hdf5" for ``*.h5``/``*.hdf5`` URLs, "zarr" when a ``zarr.json`` is present; else ``NotFound``."""
    if url.rstrip("/").lower().endswith(HDF5_SUFFIXES):
        return "hdf5"
    with remote_errors(url, "looking for the dataset"):
        if is_local(url):
            import os

            if os.path.exists(os.path.join(local_path(url), "zarr.json")):
                return "zarr"
        else:
            import fsspec

            fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
            if fs.exists(path.rstrip("/") + "/zarr.json"):
                return "zarr"
    raise not_found(url)


def open_store(url: str, storage_options: dict[str, Any] | None = None, mode: str = "r") -> FieldStore:
    """Open an existing dataset, detecting its back end. ``mode`` is ``"r"`` or ``"r+"``."""
    return _backend_class(detect_backend(url, storage_options)).open(url, storage_options=storage_options, mode=mode)
