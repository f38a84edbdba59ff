"""Output files of cutout jobs: the zarr group tasks write into, and the other formats written from it.

The zarr group is the working format: :func:`create_cutout_zarr` makes it before any task runs, with the
layout of the ``zarr`` output format (:mod:`labservice.cutout.formats.zarr`) plus shards, and the tasks
fill its shards (:func:`encode_shard`). At the end :func:`assemble` reads it back shard by shard and hands
it to the format registry's writer, the same writer the synchronous /cutout route uses, so a job's files
have the layout of a synchronous cutout and memory stays bounded by a shard whatever the cutout size.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labservice.cutout.formats import get_format, job_formats, write_source
from labservice.cutout.formats.zarr import create_group, group_source
from labservice.cutout.layout import CutoutLayout
from labservice.jobs.scratch import FileEntry, Scratch

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
    source = group_source(group, job_layout(meta, dict(group.attrs)))
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
