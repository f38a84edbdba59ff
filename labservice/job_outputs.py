"""Output files of cutout jobs: the zarr skeleton tasks write into, and HDF5+XDMF or NetCDF copies of it.

The zarr group is the working format: it is created before any task runs (arrays, dimension names,
coordinates) and the tasks fill its shards. HDF5 and NetCDF are assembled from it at the end, one shard at
a time, so memory stays bounded by a shard whatever the cutout size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from labservice.scratch import FileEntry, Scratch

COORDS = ("time", "z", "y", "x")


def zarr_store(scratch: Scratch, job: str, path: str, read_only: bool = False) -> Any:
    """A zarr store for ``path`` under the job's prefix (LocalStore on disk, FsspecStore elsewhere)."""
    import zarr

    if scratch.local:
        return zarr.storage.LocalStore(scratch.path(job, path), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        scratch.job_url(job, path), storage_options=scratch.storage_options, read_only=read_only
    )


def create_cutout_zarr(
    scratch: Scratch,
    job: str,
    path: str,
    layout: dict[str, Any],
) -> None:
    """Create the output group: one empty sharded array per variable plus coordinate arrays.

    ``layout`` holds ``variables`` ({name: {"components": [...], "units": str}}), ``shape``
    ([nt, nz, ny, nx]), ``shard`` ([sz, sy, sx]), ``chunk`` ([cz, cy, cx]), ``coords`` ({"time": [...],
    "z": [...], ...}), ``attrs`` (group attributes). Nothing job- or time-specific goes in, so two runs of
    the same request produce byte-identical stores.
    """
    import zarr

    nt, nz, ny, nx = layout["shape"]
    group = zarr.open_group(zarr_store(scratch, job, path), mode="w", attributes=layout["attrs"])
    for name, var in layout["variables"].items():
        nc = len(var["components"])
        group.create_array(
            name,
            shape=(nt, nz, ny, nx, nc),
            dtype="float32",
            chunks=(1, *layout["chunk"], nc),
            shards=(1, *layout["shard"], nc),
            dimension_names=("time", "z", "y", "x", f"{name}_component"),
            compressors=None,
            fill_value=np.nan,
            attributes={"components": var["components"], "units": var["units"]},
        )
    for name in COORDS:
        values = np.asarray(layout["coords"][name], dtype=np.float64)
        arr = group.create_array(
            name, shape=values.shape, dtype="float64", dimension_names=(name,), compressors=None
        )
        arr[:] = values


def _shard_slices(shape: tuple[int, ...], shard: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    nt, nz, ny, nx = shape[:4]
    _, sz, sy, sx = shard[:4]
    for t in range(nt):
        for z0 in range(0, nz, sz):
            for y0 in range(0, ny, sy):
                for x0 in range(0, nx, sx):
                    yield (slice(t, t + 1), slice(z0, z0 + sz), slice(y0, y0 + sy), slice(x0, x0 + sx))


def assemble(scratch: Scratch, job: str, zarr_path: str, fmt: str, spec: dict[str, Any]) -> list[FileEntry]:
    """Copy the finished zarr group into ``cutout.h5`` (+ ``cutout.xdmf``) or ``cutout.nc``."""
    import zarr

    group = zarr.open_group(zarr_store(scratch, job, zarr_path, read_only=True), mode="r")
    variables = list(spec["variables"])
    coords = {name: np.asarray(group[name][:]) for name in COORDS}
    fd, tmp = tempfile.mkstemp(suffix=".h5" if fmt == "hdf5" else ".nc")
    os.close(fd)
    try:
        if fmt == "hdf5":
            _write_hdf5(tmp, group, variables, coords)
            name = "cutout.h5"
        else:
            _write_netcdf(tmp, group, variables, coords)
            name = "cutout.nc"
        entries = [scratch.put_file(job, name, tmp)]
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if fmt == "hdf5":
        xdmf = xdmf_text(name, group, variables, coords)
        entries.append(scratch.put_bytes(job, "cutout.xdmf", xdmf.encode()))
    return entries


def _write_hdf5(path: str, group: Any, variables: list[str], coords: dict[str, np.ndarray]) -> None:
    import h5py

    with h5py.File(path, "w", track_order=True) as f:
        for name, values in coords.items():
            f.create_dataset(name, data=values)
        for var in variables:
            src = group[var]
            dst = f.create_dataset(var, shape=src.shape, dtype="float32", chunks=(1, *src.chunks[1:]))
            dst.attrs["components"] = list(src.attrs["components"])
            dst.attrs["units"] = src.attrs["units"]
            for sl in _shard_slices(src.shape, src.shards):
                dst[sl] = src[sl]


def _write_netcdf(path: str, group: Any, variables: list[str], coords: dict[str, np.ndarray]) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        for name, values in coords.items():
            nc.createDimension(name, len(values))
            nc.createVariable(name, "f8", (name,))[:] = values
        for var in variables:
            src = group[var]
            dim = f"{var}_component"
            nc.createDimension(dim, src.shape[-1])
            dst = nc.createVariable(var, "f4", ("time", "z", "y", "x", dim), chunksizes=(1, *src.chunks[1:]))
            dst.setncattr("components", ",".join(src.attrs["components"]))
            dst.setncattr("units", src.attrs["units"])
            for sl in _shard_slices(src.shape, src.shards):
                dst[sl] = src[sl]


def xdmf_text(h5_name: str, group: Any, variables: list[str], coords: dict[str, np.ndarray]) -> str:
    """An XDMF 3 file describing the HDF5 cutout as a rectilinear grid series, for ParaView."""
    nz, ny, nx = (len(coords[a]) for a in ("z", "y", "x"))
    grids = []
    for t, tv in enumerate(coords["time"]):
        attrs = []
        for var in variables:
            nt, _, _, _, nc = group[var].shape
            kind = "Scalar" if nc == 1 else "Vector" if nc == 3 else "Matrix"
            attrs.append(
                f'      <Attribute Name="{var}" AttributeType="{kind}" Center="Node">\n'
                f'        <DataItem ItemType="HyperSlab" Dimensions="{nz} {ny} {nx} {nc}" Type="HyperSlab">\n'
                f'          <DataItem Dimensions="3 5" Format="XML">{t} 0 0 0 0 1 1 1 1 1 1 {nz} {ny} {nx} {nc}</DataItem>\n'
                f'          <DataItem Dimensions="{nt} {nz} {ny} {nx} {nc}" NumberType="Float" Precision="4" '
                f'Format="HDF">{h5_name}:/{var}</DataItem>\n'
                f"        </DataItem>\n      </Attribute>"
            )
        grids.append(
            f'    <Grid Name="t{t}" GridType="Uniform">\n'
            f'      <Time Value="{float(tv)!r}"/>\n'
            f'      <Topology TopologyType="3DRectMesh" Dimensions="{nz} {ny} {nx}"/>\n'
            f'      <Geometry GeometryType="VXVYVZ">\n'
            f'        <DataItem Dimensions="{nx}" NumberType="Float" Precision="8" Format="HDF">{h5_name}:/x</DataItem>\n'
            f'        <DataItem Dimensions="{ny}" NumberType="Float" Precision="8" Format="HDF">{h5_name}:/y</DataItem>\n'
            f'        <DataItem Dimensions="{nz}" NumberType="Float" Precision="8" Format="HDF">{h5_name}:/z</DataItem>\n'
            f"      </Geometry>\n" + "\n".join(attrs) + "\n    </Grid>"
        )
    return (
        '<?xml version="1.0" ?>\n<Xdmf Version="3.0">\n  <Domain>\n'
        '   <Grid Name="cutout" GridType="Collection" CollectionType="Temporal">\n'
        + "\n".join(grids)
        + "\n   </Grid>\n  </Domain>\n</Xdmf>\n"
    )


EMPTY = np.uint64(2**64 - 1)


def encode_shard(
    block: np.ndarray | Callable[[tuple[int, int, int]], np.ndarray],
    corner: tuple[int, int, int],
    shape: tuple[int, int, int],
    shard: tuple[int, int, int],
    chunk: tuple[int, int, int],
) -> list[memoryview | bytes]:
    """Encode one output shard as zarr's sharding codec does for our arrays, without going through zarr.

    The arrays are created by :func:`create_cutout_zarr` with raw little-endian float32 inner chunks and a
    crc32c-protected index at the end, so a shard is: the inner chunks in Morton order (zarr's order),
    then the (offset, nbytes) index in C order, then the index's crc32c. Edge chunks are padded with the
    fill value (NaN); chunks wholly outside the array are left out, as zarr leaves out empty chunks.

    Parameters
    ----------
    block
        (nz, ny, nx, nc) float32 values of the shard's part inside the array, or a function giving the
        values of inner chunk (iz, iy, ix) of the shard (clipped to the array), to skip one copy.
    corner
        Array index (z, y, x) of the shard's first point.
    shape, shard, chunk
        Array spatial shape, shard shape and inner chunk shape, all (z, y, x).

    Returns
    -------
    list
        The shard's bytes in consecutive pieces (join them, or write them one after the other).
    """
    import crc32c
    from zarr.core.indexing import morton_order_iter

    per = tuple(s // c for s, c in zip(shard, chunk, strict=True))
    index = np.full((*per, 2), EMPTY, dtype="<u8")
    parts: list[memoryview | bytes] = []
    offset = 0
    for _, iz, iy, ix, _ in morton_order_iter((1, *per, 1)):
        lo = (iz * chunk[0], iy * chunk[1], ix * chunk[2])
        if any(corner[a] + lo[a] >= shape[a] for a in range(3)):
            continue  # wholly outside the array: an empty chunk
        if callable(block):
            piece = block((iz, iy, ix))
        else:
            piece = block[lo[0] : lo[0] + chunk[0], lo[1] : lo[1] + chunk[1], lo[2] : lo[2] + chunk[2]]
        if piece.shape[:3] != chunk:
            padded = np.full((*chunk, piece.shape[3]), np.nan, dtype="<f4")
            padded[: piece.shape[0], : piece.shape[1], : piece.shape[2]] = piece
            piece = padded
        data = memoryview(np.ascontiguousarray(piece, dtype="<f4")).cast("B")
        index[iz, iy, ix] = (offset, data.nbytes)
        offset += data.nbytes
        parts.append(data)
    index_bytes = index.tobytes()
    return [*parts, index_bytes, np.uint32(crc32c.crc32c(index_bytes)).astype("<u4").tobytes()]
