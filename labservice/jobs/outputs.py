"""Output files of cutout jobs: the zarr group tasks write into, and the other formats written from it.

The zarr group is the working format: :func:`create_cutout_zarr` makes it before any task runs, with the
layout of the ``zarr`` output format (:mod:`labservice.cutout.formats.zarr`) plus shards, and the tasks
fill its shards (:func:`encode_shard`). At the end :func:`assemble` reads it back shard by shard, straight
from the shard bytes (:func:`shard_source`, the blocks zarr would give, without zarr's overhead), and hands
it to the format registry's writer, the same writer the synchronous /cutout route uses, so a job's files
have the layout of a synchronous cutout and memory stays bounded by a shard whatever the cutout size.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labservice.cutout.formats import get_format, job_formats, write_source
from labservice.cutout.formats.zarr import create_group, group_source
from labservice.cutout.layout import BlockSource, CutoutLayout
from labservice.errors import CorruptData, NotFound
from labservice.jobs.scratch import FileEntry, Scratch
from labservice.storage._common import EMPTY_CHUNK, crc_ok

JobFormat = Literal[tuple(job_formats())]  # type: ignore[valid-type]  # the registry's job formats
STEM = "cutout"
# Job file names the jobs API documents: the XDMF sidecar of cutout.h5 is cutout.xdmf.
JOB_SUFFIXES = {".xmf": ".xdmf"}


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
    layout: CutoutLayout,
    shard: tuple[int, int, int] | list[int],
    chunk: tuple[int, int, int] | list[int],
) -> None:
    """Create the output group: coordinates, attributes and one empty sharded array per variable.

    ``shard`` and ``chunk`` are (z, y, x). Nothing job- or time-specific goes in, so two runs of the same
    request produce byte-identical stores. Edge chunks are padded with NaN, as :func:`encode_shard` does.
    """
    create_group(
        zarr_store(scratch, job, path),
        layout,
        chunks=tuple(chunk),
        shards=tuple(shard),
        fill_value=np.nan,
    )


def job_layout(meta: Any, attrs: dict[str, Any]) -> CutoutLayout:
    """The layout of a job's cutout from its zarr group's attributes (jobs always keep the time axis)."""
    return CutoutLayout.from_attrs(meta, attrs, keep_time_axis=True)


def assemble(scratch: Scratch, job: str, zarr_path: str, fmt: str, spec: dict[str, Any]) -> list[FileEntry]:
    """Write the finished zarr group as ``cutout<suffix>`` in ``fmt`` (hdf5 adds ``cutout.xdmf``)."""
    import zarr

    from labservice.storage import open_store

    store = open_store(spec["dataset_url"], storage_options=spec.get("dataset_options"))
    try:
        meta = store.meta
    finally:
        store.close()
    group = zarr.open_group(zarr_store(scratch, job, zarr_path, read_only=True), mode="r")
    layout = job_layout(meta, dict(group.attrs))
    # Our own shards are read straight from their bytes (zarr's reader took most of the finalizer's time);
    # anything not in encode_shard's layout goes through zarr.
    source = shard_source(scratch, job, zarr_path, layout) or group_source(group, layout)
    f = get_format(fmt)
    tmp = Path(tempfile.mkdtemp(prefix="job-output-"))
    try:
        files = write_source(source, f.name, tmp / f"{STEM}{f.suffix}")
        entries = []
        for path in files:
            suffix = f.suffix if path == files[0] else JOB_SUFFIXES.get(path.suffix, path.suffix)
            entries.append(scratch.put_file(job, f"{STEM}{suffix}", str(path)))
        return entries
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def encode_shard(
    block: np.ndarray | Callable[[tuple[int, int, int]], np.ndarray],
    corner: tuple[int, int, int],
    shape: tuple[int, int, int],
    shard: tuple[int, int, int],
    chunk: tuple[int, int, int],
) -> Iterator[memoryview | bytes]:
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

    Yields
    ------
    memoryview or bytes
        The shard's bytes in consecutive pieces (join them, or write them one after the other). A
        generator, so that each inner chunk is read, written and hashed while it is still in the CPU's
        cache, and a shard never sits whole in memory.
    """
    import crc32c
    from zarr.core.indexing import morton_order_iter

    per = tuple(s // c for s, c in zip(shard, chunk, strict=True))
    index = np.full((*per, 2), EMPTY_CHUNK, dtype="<u8")
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
        yield data
    index_bytes = index.tobytes()
    yield index_bytes
    yield np.uint32(crc32c.crc32c(index_bytes)).astype("<u4").tobytes()


# The codecs :func:`create_cutout_zarr` gives an array, the ones :func:`encode_shard` writes.
_SHARD_CODECS = {
    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
    "index_location": "end",
}


def _shard_geometry(meta: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(shape, shard, chunk) of a job's working array (t, z, y, x, c), or None if it is not as we write it."""
    try:
        (codec,) = meta["codecs"]
        conf = dict(codec["configuration"])
        chunk = tuple(conf.pop("chunk_shape"))
        shape, shard = tuple(meta["shape"]), tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        plain = (
            codec["name"] == "sharding_indexed"
            and conf == _SHARD_CODECS
            and meta["data_type"] == "float32"
            and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
            and meta["chunk_grid"]["name"] == "regular"
            and len(shape) == 5
            and shard[0] == chunk[0] == 1
            and shard[4] == chunk[4] == shape[4]
            and all(a % b == 0 for a, b in zip(shard, chunk, strict=True))
        )
    except (KeyError, TypeError, ValueError):
        return None
    return (shape, shard, chunk) if plain else None


def shard_source(scratch: Scratch, job: str, zarr_path: str, layout: CutoutLayout) -> BlockSource | None:
    """The working group's blocks read straight from the shard objects :func:`encode_shard` wrote.

    Gives the same blocks, in the same order, as ``group_source`` (one shard, or with ``planes`` one
    z-slab of shards, at a time), so every format writer makes the same file; None when an array is not
    in that layout. The index of every shard is checked against its crc32c.
    """
    import json

    from labservice.cutout.layout import Block

    geometry = []
    for plan in layout.plans:
        meta = json.loads(scratch.read_bytes(job, f"{zarr_path}/{plan.variable}/zarr.json"))
        g = _shard_geometry(meta)
        if g is None or g[0][1:4] != layout.spatial_shape:
            return None
        geometry.append(g)
    step = geometry[0][1][1:4]
    nz, ny, nx = layout.spatial_shape

    def shard_values(vi: int, ti: int, s: tuple[int, int, int]) -> np.ndarray:
        """Shard ``s`` (iz, iy, ix) of variable ``vi`` at time ``ti``, clipped to the array."""
        shape, shard, chunk = geometry[vi]
        sp, ch, nc = shard[1:4], chunk[1:4], shape[4]
        lo = [i * n for i, n in zip(s, sp, strict=True)]
        ext = [min(n, m - a) for n, m, a in zip(sp, shape[1:4], lo, strict=True)]
        out = np.empty((*ext, nc), dtype="<f4")  # every point is set below: a chunk's values or NaN
        key = f"{zarr_path}/{layout.plans[vi].variable}/c/{ti}/{s[0]}/{s[1]}/{s[2]}/0"
        try:
            raw = scratch.read_bytes(job, key)
        except NotFound:
            out.fill(np.nan)  # never written: the fill value, as zarr reads it
            return out
        per = tuple(a // b for a, b in zip(sp, ch, strict=True))
        nindex = int(np.prod(per)) * 16
        tail = memoryview(raw)[len(raw) - nindex - 4 :]
        if len(raw) < nindex + 4 or not crc_ok(tail):
            raise CorruptData(f"the index of the job's working shard {key} is damaged")
        index = np.frombuffer(tail[:-4], dtype="<u8").reshape(*per, 2)
        for iz, iy, ix in np.ndindex(*per):
            off, size = (int(v) for v in index[iz, iy, ix])
            a = [iz * ch[0], iy * ch[1], ix * ch[2]]
            if any(a[k] >= ext[k] for k in range(3)):
                continue
            b = [min(ch[k], ext[k] - a[k]) for k in range(3)]
            if off == int(EMPTY_CHUNK):
                out[a[0] : a[0] + b[0], a[1] : a[1] + b[1], a[2] : a[2] + b[2]] = np.nan
                continue
            if size != int(np.prod(ch)) * nc * 4 or off + size > len(raw) - nindex - 4:
                raise CorruptData(f"chunk {(iz, iy, ix)} of the job's working shard {key} is damaged")
            values = np.frombuffer(raw, dtype="<f4", count=size // 4, offset=off).reshape(*ch, nc)
            out[a[0] : a[0] + b[0], a[1] : a[1] + b[1], a[2] : a[2] + b[2]] = values[: b[0], : b[1], : b[2]]
        return out

    def read(planes: bool) -> Iterator[Block]:
        for vi in range(len(layout.plans)):
            for ti in range(len(layout.times)):
                for z0 in range(0, nz, step[0]):
                    iz = z0 // step[0]
                    if not planes:
                        for y0 in range(0, ny, step[1]):
                            for x0 in range(0, nx, step[2]):
                                yield Block(
                                    vi,
                                    ti,
                                    (z0, y0, x0),
                                    shard_values(vi, ti, (iz, y0 // step[1], x0 // step[2])),
                                )
                        continue
                    slab = np.empty((min(step[0], nz - z0), ny, nx, geometry[vi][0][4]), dtype="<f4")
                    for y0 in range(0, ny, step[1]):
                        for x0 in range(0, nx, step[2]):
                            v = shard_values(vi, ti, (iz, y0 // step[1], x0 // step[2]))
                            slab[:, y0 : y0 + v.shape[1], x0 : x0 + v.shape[2]] = v
                    yield Block(vi, ti, (z0, 0, 0), slab)

    return BlockSource(layout, read, chunks=tuple(geometry[0][2][1:4]))
