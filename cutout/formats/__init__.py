"""Cutout output formats: a registry (:mod:`.registry`) filled by one module per format.

- ``hdf5``: coordinates as HDF5 dimension scales, with the ``.xmf`` XDMF sidecar.
- ``xdmf``: the XDMF text alone, referring to ``<name>.h5``.
- ``zip``: the ``.h5`` and its ``.xmf`` zipped together.
- ``netcdf``: NETCDF4 with dimensions ([time,] z, y, x, component) and coordinate variables.
- ``zarr``: a zarr v3 group with consolidated metadata (zipped when encoded to bytes).
- ``npy``: the bare array ([time,] z, y, x, component), one variable only.
- ``msgpack``: a streamable map of attrs, dims, coords and raw array bytes.

A new format is a new module here that calls :func:`register` at import: it is found by the loop at
the bottom of this file, and the /cutout route, jobs, catalog and portal then list it.
"""

from __future__ import annotations

import importlib
import pkgutil

from labservice.cutout.formats.api import (
    STREAM_CHUNK,
    EncodedCutout,
    default_name,
    encode_cutout,
    iter_encoded,
    iter_layout,
    iter_source,
    map_file,
    open_cutout,
    stream_cutout,
    to_xarray,
    write_cutout,
    write_layout,
    write_source,
)
from labservice.cutout.formats.registry import (
    Format,
    accepted_names,
    all_formats,
    check_format,
    download_formats,
    get_format,
    job_formats,
    register,
)

_NOT_FORMATS = {"api", "common", "registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_FORMATS:
        importlib.import_module(f"{__name__}.{_module.name}")

from labservice.cutout.formats.msgpack import decode_msgpack, pack_array, unpack_array  # noqa: E402
from labservice.cutout.formats.xdmf import xdmf_text  # noqa: E402

FORMATS: dict[str, Format] = all_formats()
FormatInfo = Format  # the older name

__all__ = [
    "FORMATS",
    "STREAM_CHUNK",
    "EncodedCutout",
    "Format",
    "accepted_names",
    "FormatInfo",
    "check_format",
    "decode_msgpack",
    "default_name",
    "download_formats",
    "encode_cutout",
    "all_formats",
    "get_format",
    "iter_encoded",
    "iter_layout",
    "iter_source",
    "job_formats",
    "map_file",
    "open_cutout",
    "pack_array",
    "register",
    "stream_cutout",
    "to_xarray",
    "unpack_array",
    "write_cutout",
    "write_layout",
    "write_source",
    "xdmf_text",
]
