"""Cutout output formats: HDF5 (+ XDMF for ParaView), NetCDF, zarr, npy and msgpack.

Every writer takes a :class:`CutoutLayout` (the header) and a stream of blocks (variable, time, z-slab),
so the same code writes an in-memory cutout and a cutout streamed from storage with bounded memory.

- ``hdf5``: coordinates ``x``, ``y``, ``z`` (and ``time``) are HDF5 dimension scales; ``write_cutout``
  also writes the ``.xmf`` sidecar next to the ``.h5``.
- ``xdmf``: the XDMF text alone, referring to ``<name>.h5``.
- ``zip``: the ``.h5`` and its ``.xmf`` zipped together.
- ``netcdf``: NETCDF4 with dimensions ([time,] z, y, x, component) and coordinate variables.
- ``zarr``: a zarr v3 group with consolidated metadata (zipped when encoded to bytes); opens with
  ``xarray.open_zarr`` with coordinates.
- ``npy``: the bare array ([time,] z, y, x, component), one variable only.
- ``msgpack``: ``{"kind", "version", "attrs", "dims", "coords", "data"}``; arrays are
  ``{"dtype", "shape", "data": raw bytes}`` and ``data`` is the last entry, so it streams. Never pickle.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from labservice.cutout.layout import Block, CutoutLayout, blocks_from_cutouts, blocks_from_reader
from labservice.cutout.region import Cutout
from labservice.cutout.xdmf import xdmf_text
from labservice.errors import InvalidInput, LimitExceeded, unknown

STREAM_CHUNK = 1 << 20
RESERVED_NAMES = {"x", "y", "z", "time", "component", "x_index", "y_index", "z_index"}


@dataclass(frozen=True)
class FormatInfo:
    """How a format is served: its media type and file suffix."""

    media_type: str
    suffix: str


FORMATS: dict[str, FormatInfo] = {
    "hdf5": FormatInfo("application/x-hdf5", ".h5"),
    "xdmf": FormatInfo("application/xml", ".xmf"),
    "zip": FormatInfo("application/zip", ".zip"),
    "netcdf": FormatInfo("application/x-netcdf", ".nc"),
    "zarr": FormatInfo("application/zip", ".zarr.zip"),
    "npy": FormatInfo("application/octet-stream", ".npy"),
    "msgpack": FormatInfo("application/msgpack", ".msgpack"),
}
ALIASES = {"h5": "hdf5", "nc": "netcdf", "netcdf4": "netcdf", "xmf": "xdmf", "hdf5+xdmf": "zip"}


def check_format(fmt: str) -> str:
    """Return the canonical format name, or raise InvalidInput naming the choices."""
    name = ALIASES.get(str(fmt).lower(), str(fmt).lower())
    if name not in FORMATS:
        raise unknown("format", str(fmt), FORMATS, error=InvalidInput)
    return name


def default_name(layout: CutoutLayout) -> str:
    """A file stem such as ``isotropic64_velocity_t3`` (``_t3-5`` for several times)."""
    t = layout.t_indices
    times = f"t{t[0]}" if len(t) == 1 else f"t{t[0]}-{t[-1]}"
    return f"{layout.region.dataset}_{'-'.join(layout.variables)}_{times}"


def _check_names(layout: CutoutLayout) -> None:
    clash = RESERVED_NAMES.intersection(layout.variables)
    if clash:
        raise InvalidInput(f"variable names {sorted(clash)} clash with coordinate names in output files")


def _one_variable(layout: CutoutLayout, fmt: str) -> None:
    if len(layout.plans) != 1:
        raise InvalidInput(
            f"{fmt} holds one variable; got {layout.variables}. Ask for hdf5, netcdf or zarr to get several."
        )


# -- HDF5 --------------------------------------------------------------------------------------------


class _Hdf5Sink:
    """Writes blocks into an HDF5 file with dimension scales and descriptive attributes."""

    def __init__(self, layout: CutoutLayout, path: Path) -> None:
        import h5py

        _check_names(layout)
        self.layout = layout
        self.file = h5py.File(path, "w")
        f = self.file
        scales = {}
        for name in ("x", "y", "z"):
            d = f.create_dataset(name, data=layout.coords(name))
            d.make_scale(name)
            d.attrs["axis"] = name.upper()
            scales[name] = d
            f.create_dataset(f"{name}_index", data=layout.indices(name))
        if layout.multi_time:
            d = f.create_dataset("time", data=np.asarray(layout.times, dtype=np.float64))
            d.make_scale("time")
            scales["time"] = d
            f.create_dataset("time_index", data=np.asarray(layout.t_indices, dtype=np.int64))
        self.dsets = []
        for plan in layout.plans:
            d = f.create_dataset(plan.variable, shape=layout.shape(plan), dtype="<f4")
            for dim, label in zip(d.dims, layout.dims(plan), strict=True):
                dim.label = label
                if label in scales:
                    dim.attach_scale(scales[label])
            d.attrs["units"] = plan.units
            d.attrs["components"] = list(plan.components)
            self.dsets.append(d)
        for key, value in layout.attrs().items():
            f.attrs[key] = value

    def write(self, vi: int, ti: int, z0: int, block: np.ndarray) -> None:
        d = self.dsets[vi]
        zs = slice(z0, z0 + block.shape[0])
        if self.layout.multi_time:
            d[ti, zs] = block
        else:
            d[zs] = block

    def close(self) -> None:
        self.file.close()


# -- NetCDF ------------------------------------------------------------------------------------------


def _coordinates_attr(layout: CutoutLayout) -> str:
    scalar_time = "" if layout.multi_time else "time time_index "
    return scalar_time + "x_index y_index z_index"


class _NetcdfSink:
    """Writes blocks into a NETCDF4 file: coordinate variables, component names as strings."""

    def __init__(self, layout: CutoutLayout, path: Path) -> None:
        import netCDF4

        _check_names(layout)
        self.layout = layout
        nc = self.nc = netCDF4.Dataset(path, "w", format="NETCDF4")
        if layout.multi_time:
            nc.createDimension("time", len(layout.times))
        for name in ("z", "y", "x"):
            nc.createDimension(name, layout.coords(name).size)
        for name in ("x", "y", "z"):
            v = nc.createVariable(name, "f8", (name,))
            v[:] = layout.coords(name)
            v.setncatts({"axis": name.upper(), "long_name": f"{name} coordinate"})
            nc.createVariable(f"{name}_index", "i8", (name,))[:] = layout.indices(name)
        tdims = ("time",) if layout.multi_time else ()
        nc.createVariable("time", "f8", tdims)[:] = np.asarray(layout.times if tdims else layout.times[0])
        nc.createVariable("time_index", "i8", tdims)[:] = np.asarray(
            layout.t_indices if tdims else layout.t_indices[0]
        )
        self.vars = []
        for plan in layout.plans:
            cdim = layout.component_dim(plan)
            if cdim not in nc.dimensions:
                nc.createDimension(cdim, len(plan.components))
                nc.createVariable(cdim, str, (cdim,))[:] = np.array(plan.components, dtype=object)
            v = nc.createVariable(plan.variable, "f4", layout.dims(plan))
            v.setncatts(
                {
                    "units": plan.units,
                    "components": list(plan.components),
                    "coordinates": _coordinates_attr(layout),
                }
            )
            self.vars.append(v)
        nc.setncatts(layout.attrs())

    def write(self, vi: int, ti: int, z0: int, block: np.ndarray) -> None:
        v = self.vars[vi]
        zs = slice(z0, z0 + block.shape[0])
        if self.layout.multi_time:
            v[ti, zs] = block
        else:
            v[zs] = block

    def close(self) -> None:
        self.nc.close()


# -- zarr --------------------------------------------------------------------------------------------


class _ZarrSink:
    """Writes blocks into a zarr v3 group that xarray opens with its coordinates."""

    def __init__(self, layout: CutoutLayout, path: Path) -> None:
        import zarr

        _check_names(layout)
        self.layout = layout
        self.path = path
        root = self.root = zarr.open_group(str(path), mode="w", zarr_format=3)

        def put(name: str, data: np.ndarray, dims: Sequence[str]) -> Any:
            # Variable-length strings have a stable v3 spelling; fixed-width numpy strings do not.
            dtype = str if data.dtype.kind in "UO" else data.dtype
            a = root.create_array(name, shape=data.shape, dtype=dtype, dimension_names=list(dims))
            a[...] = data
            return a

        for name in ("x", "y", "z"):
            put(name, layout.coords(name), (name,)).attrs.update({"axis": name.upper()})
            put(f"{name}_index", layout.indices(name), (name,))
        tdims = ("time",) if layout.multi_time else ()
        times = np.asarray(layout.times if tdims else layout.times[0], dtype=np.float64)
        put("time", times, tdims)
        put(
            "time_index",
            np.asarray(layout.t_indices if tdims else layout.t_indices[0], dtype=np.int64),
            tdims,
        )
        self.arrays = []
        for plan in layout.plans:
            cdim = layout.component_dim(plan)
            if cdim not in root:
                put(cdim, np.array(plan.components, dtype=str), (cdim,))
            shape = layout.shape(plan)
            nz, ny, nx, ncomp = plan.shape
            chunks = (1,) * len(tdims) + (min(nz, 16), min(ny, 128), min(nx, 128), ncomp)
            # Uncompressed: float32 turbulence barely compresses and zstd would halve the write speed.
            a = root.create_array(
                plan.variable,
                shape=shape,
                chunks=chunks,
                dtype="float32",
                compressors=None,
                dimension_names=list(layout.dims(plan)),
            )
            a.attrs.update(
                {
                    "units": plan.units,
                    "components": list(plan.components),
                    "coordinates": _coordinates_attr(layout),
                }
            )
            self.arrays.append(a)
        root.attrs.update(layout.attrs())

    def write(self, vi: int, ti: int, z0: int, block: np.ndarray) -> None:
        a = self.arrays[vi]
        zs = slice(z0, z0 + block.shape[0])
        if self.layout.multi_time:
            a[ti, zs] = block
        else:
            a[zs] = block

    def close(self) -> None:
        import zarr

        # Consolidated metadata is not (yet) in the zarr v3 spec and zarr warns about it; xarray opens
        # a consolidated store without probing every array, so we write it anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(self.path))


def _zip_add(z: zipfile.ZipFile, path: Path, arcname: str) -> None:
    """Add a file with big copy buffers (``ZipFile.write`` copies 8 KiB at a time, several times slower)."""
    info = zipfile.ZipInfo.from_file(path, arcname)
    info.compress_type = zipfile.ZIP_STORED
    with open(path, "rb") as src, z.open(info, "w", force_zip64=True) as dst:
        shutil.copyfileobj(src, dst, 4 << 20)


def _zip_dir(src: Path, dest: Path) -> None:
    """Zip a directory tree with paths relative to it, uncompressed (chunks are compressed already)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for root, _dirs, files in os.walk(src):
            for name in sorted(files):
                full = Path(root) / name
                _zip_add(z, full, full.relative_to(src).as_posix())


# -- npy and msgpack streams -------------------------------------------------------------------------


def _ordered(layout: CutoutLayout, blocks: Iterable[Block]) -> Iterator[np.ndarray]:
    """Check that blocks come in C order (time, then z) and yield them as float32 little-endian."""
    expect = (0, 0)
    nz = layout.spatial_shape[0]
    for _vi, ti, z0, block in blocks:
        if (ti, z0) != expect:
            raise ValueError(f"blocks out of order: expected (time, z) = {expect}, got {(ti, z0)}")
        z1 = z0 + block.shape[0]
        expect = (ti, z1) if z1 < nz else (ti + 1, 0)
        yield np.ascontiguousarray(block, dtype="<f4")


def _npy_stream(layout: CutoutLayout, blocks: Iterable[Block]) -> Iterator[bytes]:
    _one_variable(layout, "npy")
    header = io.BytesIO()
    shape = layout.shape(layout.region)
    np.lib.format.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    yield header.getvalue()
    for block in _ordered(layout, blocks):
        yield block.tobytes()


def pack_array(a: np.ndarray) -> dict[str, Any]:
    """The msgpack form of an array: ``{"dtype", "shape", "data"}`` with raw little-endian bytes."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def unpack_array(d: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`pack_array` (checks that the byte count matches the shape)."""
    dtype = np.dtype(d["dtype"])
    shape = tuple(int(s) for s in d["shape"])
    if dtype.hasobject or len(d["data"]) != dtype.itemsize * int(np.prod(shape)):
        raise InvalidInput(f"array of dtype {d['dtype']} and shape {list(shape)} does not match its bytes")
    return np.frombuffer(d["data"], dtype=dtype).reshape(shape)


def _msgpack_stream(layout: CutoutLayout, blocks: Iterable[Block]) -> Iterator[bytes]:
    _one_variable(layout, "msgpack")
    plan = layout.region
    shape = layout.shape(plan)
    nbytes = 4 * int(np.prod(shape))
    if nbytes >= 2**32:
        raise LimitExceeded("a msgpack cutout is limited to 4 GiB; ask for zarr, hdf5 or netcdf instead")
    coords = {name: pack_array(layout.coords(name)) for name in ("x", "y", "z")}
    coords.update({f"{name}_index": pack_array(layout.indices(name)) for name in ("x", "y", "z")})
    coords["time"] = pack_array(np.asarray(layout.times, dtype=np.float64))
    coords["component"] = list(plan.components)
    head = {
        "kind": "labservice.cutout",
        "version": 1,
        "attrs": layout.attrs(),
        "dims": list(layout.dims(plan)),
        "coords": coords,
    }
    packer = msgpack.Packer(use_bin_type=True)
    out = bytearray(packer.pack_map_header(len(head) + 1))
    for key, value in head.items():
        out += packer.pack(key) + packer.pack(value)
    # "data" goes last and its bytes are framed by hand (bin 32), so the array streams block by block.
    out += packer.pack("data") + packer.pack_map_header(3)
    out += packer.pack("dtype") + packer.pack("<f4") + packer.pack("shape") + packer.pack(list(shape))
    out += packer.pack("data") + b"\xc6" + nbytes.to_bytes(4, "big")
    yield bytes(out)
    for block in _ordered(layout, blocks):
        yield block.tobytes()


def decode_msgpack(payload: bytes) -> dict[str, Any]:
    """Decode a msgpack cutout: returns ``data``, ``coords`` (arrays), ``dims`` and ``attrs``."""
    try:
        d = msgpack.unpackb(payload, raw=False, max_bin_len=len(payload))
    except Exception as exc:
        raise InvalidInput(f"not a msgpack cutout: {exc}") from exc
    coords = {k: (unpack_array(v) if isinstance(v, dict) else v) for k, v in d["coords"].items()}
    return {"data": unpack_array(d["data"]), "coords": coords, "dims": d["dims"], "attrs": d["attrs"]}


# -- public API --------------------------------------------------------------------------------------


_SINKS = {"hdf5": _Hdf5Sink, "netcdf": _NetcdfSink, "zarr": _ZarrSink}


def write_layout(
    layout: CutoutLayout, blocks: Iterable[Block], fmt: str, path: str | os.PathLike[str]
) -> list[Path]:
    """Write a cutout given as layout + blocks to ``path``; returns the files written.

    ``hdf5`` also writes ``<path stem>.xmf``; ``zarr`` writes a directory unless ``path`` ends in
    ``.zip``; ``zip`` writes a zip holding the ``.h5`` and ``.xmf``.
    """
    fmt = check_format(fmt)
    path = Path(path)
    if fmt in ("npy", "msgpack"):
        stream = _npy_stream if fmt == "npy" else _msgpack_stream
        with open(path, "wb") as f:
            f.writelines(stream(layout, blocks))
        return [path]
    if fmt == "xdmf":
        raise InvalidInput("xdmf is a sidecar: write format 'hdf5' (it writes the .xmf too) or 'zip'")
    if fmt == "zip":
        with tempfile.TemporaryDirectory(prefix="cutout-") as tmp:
            stem = path.name.removesuffix(".zip") or "cutout"
            files = write_layout(layout, blocks, "hdf5", Path(tmp) / f"{stem}.h5")
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for f in files:
                    _zip_add(z, f, f.name)
        return [path]
    if fmt == "zarr" and path.name.endswith(".zip"):
        with tempfile.TemporaryDirectory(prefix="cutout-") as tmp:
            store = Path(tmp) / "store.zarr"
            write_layout(layout, blocks, "zarr", store)
            _zip_dir(store, path)
        return [path]
    sink = _SINKS[fmt](layout, path)
    try:
        for vi, ti, z0, block in blocks:
            sink.write(vi, ti, z0, block)
    finally:
        sink.close()
    if fmt == "hdf5":
        xmf = path.with_suffix(".xmf")
        xmf.write_text(xdmf_text(layout, path.name))
        return [path, xmf]
    return [path]


def write_cutout(cutouts: Cutout | Sequence[Cutout], fmt: str, path: str | os.PathLike[str]) -> list[Path]:
    """Write in-memory cutouts (several times and/or variables of one region) to a file.

    Parameters
    ----------
    cutouts : Cutout or sequence of Cutout
        Every variable at every time exactly once; several times add a leading time dimension.
    fmt : str
        One of ``hdf5`` (+ ``.xmf`` sidecar), ``zip``, ``netcdf``, ``zarr``, ``npy``, ``msgpack``.
    path : path-like
        Destination file (a directory for zarr unless it ends in ``.zip``).

    Returns
    -------
    list of Path
        The files written.
    """
    layout = CutoutLayout.from_cutouts(cutouts)
    return write_layout(layout, blocks_from_cutouts(layout, cutouts), fmt, path)


def iter_layout(
    layout: CutoutLayout,
    blocks: Iterable[Block],
    fmt: str,
    name: str | None = None,
    chunk_size: int = STREAM_CHUNK,
) -> Iterator[bytes]:
    """Encode a cutout as a stream of byte pieces, for HTTP streaming.

    ``npy`` and ``msgpack`` stream straight from the blocks. ``hdf5``, ``zip``, ``netcdf`` and ``zarr``
    (zipped) need a file: they are written to a temporary directory, streamed, and deleted when the
    iterator finishes or is closed. ``xdmf`` is the sidecar text naming ``<name>.h5``.
    """
    fmt = check_format(fmt)
    if fmt == "npy":
        yield from _npy_stream(layout, blocks)
        return
    if fmt == "msgpack":
        yield from _msgpack_stream(layout, blocks)
        return
    stem = name or default_name(layout)
    if fmt == "xdmf":
        yield xdmf_text(layout, f"{stem}.h5").encode()
        return
    tmp = tempfile.mkdtemp(prefix="cutout-")
    try:
        suffix = {"hdf5": ".h5", "zip": ".zip", "netcdf": ".nc", "zarr": ".zarr.zip"}[fmt]
        path = Path(tmp) / f"{stem}{suffix}"
        write_layout(layout, blocks, fmt, path)
        with open(path, "rb") as f:
            while piece := f.read(chunk_size):
                yield piece
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def iter_encoded(
    cutouts: Cutout | Sequence[Cutout], fmt: str, name: str | None = None, chunk_size: int = STREAM_CHUNK
) -> Iterator[bytes]:
    """Stream in-memory cutouts in a format; see :func:`iter_layout`."""
    layout = CutoutLayout.from_cutouts(cutouts)
    return iter_layout(layout, blocks_from_cutouts(layout, cutouts), fmt, name, chunk_size)


def encode_cutout(cutouts: Cutout | Sequence[Cutout], fmt: str, name: str | None = None) -> bytes:
    """Encode in-memory cutouts to bytes in one piece (small cutouts; stream big ones)."""
    return b"".join(iter_encoded(cutouts, fmt, name))


def stream_cutout(
    reader: Any,
    layout: CutoutLayout,
    fmt: str,
    name: str | None = None,
    chunk_size: int = STREAM_CHUNK,
    max_bytes: int = 64 * 2**20,
) -> Iterator[bytes]:
    """Read a cutout from storage and stream it encoded, holding about ``max_bytes`` of data at a time.

    Build ``layout`` with :func:`labservice.cutout.layout_for` after checking
    :func:`labservice.cutout.cutout_nbytes` against the caller's limits.
    """
    return iter_layout(layout, blocks_from_reader(layout, reader, max_bytes=max_bytes), fmt, name, chunk_size)


def to_xarray(cutouts: Cutout | Sequence[Cutout]) -> Any:
    """In-memory cutouts as an ``xarray.Dataset`` with the same dims, coords and attrs as the files."""
    import xarray as xr

    layout = CutoutLayout.from_cutouts(cutouts)
    by_key = {
        (c.variable, c.t_index): c.data for c in ([cutouts] if isinstance(cutouts, Cutout) else cutouts)
    }
    tdims = ("time",) if layout.multi_time else ()
    coords: dict[str, Any] = {}
    for name in ("x", "y", "z"):
        coords[name] = (name, layout.coords(name), {"axis": name.upper()})
        coords[f"{name}_index"] = (name, layout.indices(name))
    coords["time"] = (tdims, np.asarray(layout.times if tdims else layout.times[0], dtype=np.float64))
    coords["time_index"] = (tdims, np.asarray(layout.t_indices if tdims else layout.t_indices[0]))
    data_vars = {}
    for plan in layout.plans:
        cdim = layout.component_dim(plan)
        coords[cdim] = (cdim, np.array(plan.components, dtype=object))
        stack = [by_key[(plan.variable, t)] for t in layout.t_indices]
        arr = np.stack(stack) if tdims else stack[0]
        data_vars[plan.variable] = (
            layout.dims(plan),
            arr,
            {"units": plan.units, "components": list(plan.components)},
        )
    return xr.Dataset(data_vars, coords=coords, attrs=layout.attrs())
