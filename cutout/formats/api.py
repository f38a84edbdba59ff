"""Writing and streaming cutouts in any registered format, from any :class:`BlockSource`.

Every entry point builds a source (in-memory cutouts, a storage reader, or blocks) and hands it to the
format's writer or encoder, so all paths (the /cutout route, jobs, the Python API) write one layout.
"""

from __future__ import annotations

import math
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labservice.cutout.formats.registry import get_format
from labservice.cutout.layout import Block, BlockSource, CutoutLayout
from labservice.cutout.region import Cutout

STREAM_CHUNK = 1 << 20


def default_name(layout: CutoutLayout) -> str:
    """A file stem such as ``isotropic64_velocity_t3`` (``_t3-5`` for several times)."""
    t = layout.t_indices
    times = f"t{t[0]}" if len(t) == 1 else f"t{t[0]}-{t[-1]}"
    return f"{layout.region.dataset}_{'-'.join(layout.variables)}_{times}"


def write_source(source: BlockSource, fmt: str, path: str | os.PathLike[str]) -> list[Path]:
    """Write a source to ``path`` in a format; returns the files written.

    ``hdf5`` also writes ``<path stem>.xmf``; ``zarr`` writes a directory unless ``path`` ends in
    ``.zip``; ``zip`` writes a zip holding the ``.h5`` and ``.xmf``.
    """
    f = get_format(fmt)
    path = Path(path)
    if f.write is not None:
        return f.write(source, path)
    assert f.encode is not None  # the registry wants one of them
    with open(path, "wb") as out:
        out.writelines(f.encode(source, path.name.removesuffix(f.suffix)))
    return [path]


def iter_source(
    source: BlockSource, fmt: str, name: str | None = None, chunk_size: int = STREAM_CHUNK
) -> Iterator[bytes]:
    """Encode a source as a stream of byte pieces, for HTTP streaming.

    Streaming formats (npy, msgpack, the xdmf sidecar) encode while reading. The others are written to a
    temporary directory, streamed, and deleted when the iterator finishes or is closed.
    """
    f = get_format(fmt)
    stem = name or default_name(source.layout)
    if f.encode is not None:
        yield from f.encode(source, stem)
        return
    tmp = tempfile.mkdtemp(prefix="cutout-")
    try:
        path = Path(tmp) / f"{stem}{f.suffix}"
        write_source(source, f.name, path)
        with open(path, "rb") as fh:
            while piece := fh.read(chunk_size):
                yield piece
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_layout(
    layout: CutoutLayout, blocks: Iterable[Block], fmt: str, path: str | os.PathLike[str]
) -> list[Path]:
    """Write a cutout given as layout + blocks (in plane order) to ``path``; see :func:`write_source`."""
    return write_source(BlockSource.of_blocks(layout, blocks), fmt, path)


def write_cutout(cutouts: Cutout | Sequence[Cutout], fmt: str, path: str | os.PathLike[str]) -> list[Path]:
    """Write in-memory cutouts (several times and/or variables of one region) to a file.

    Parameters
    ----------
    cutouts : Cutout or sequence of Cutout
        Every variable at every time exactly once; several times add a leading time dimension.
    fmt : str
        A registered format: ``hdf5`` (+ ``.xmf`` sidecar), ``zip``, ``netcdf``, ``zarr``, ``npy``, ...
    path : path-like
        Destination file (a directory for zarr unless it ends in ``.zip``).

    Returns
    -------
    list of Path
        The files written.
    """
    return write_source(BlockSource.of_cutouts(cutouts), fmt, path)


def iter_layout(
    layout: CutoutLayout,
    blocks: Iterable[Block],
    fmt: str,
    name: str | None = None,
    chunk_size: int = STREAM_CHUNK,
) -> Iterator[bytes]:
    """Stream a cutout given as layout + blocks (in plane order); see :func:`iter_source`."""
    return iter_source(BlockSource.of_blocks(layout, blocks), fmt, name, chunk_size)


def iter_encoded(
    cutouts: Cutout | Sequence[Cutout], fmt: str, name: str | None = None, chunk_size: int = STREAM_CHUNK
) -> Iterator[bytes]:
    """Stream in-memory cutouts in a format; see :func:`iter_source`."""
    return iter_source(BlockSource.of_cutouts(cutouts), fmt, name, chunk_size)


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
    return iter_source(BlockSource.of_reader(reader, layout, max_bytes=max_bytes), fmt, name, chunk_size)


@dataclass
class EncodedCutout:
    """A cutout ready to send: its first piece, the pieces after it, and the byte count when known.

    Pieces are bytes or memoryviews of the data itself (never copies); the first is ready, so errors
    found while starting come before any byte is sent. Call :meth:`close` when done (it ends ``rest`` and
    removes any temporary file).
    """

    first: bytes | memoryview
    rest: Iterator[bytes | memoryview] = field(default_factory=lambda: iter(()))
    length: int | None = None

    def close(self) -> None:
        close = getattr(self.rest, "close", None)
        if close is not None:
            close()


def map_file(path: str | os.PathLike[str]) -> bytes | memoryview:
    """A read-only view of a whole file, mapped from the page cache (no copy; the mapping stays valid
    after the file is deleted and is released with the last reference to the view)."""
    size = os.path.getsize(path)
    if size == 0:
        return b""
    with open(path, "rb") as fh:
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # map all pages now: no fault per page
        return memoryview(mmap.mmap(fh.fileno(), size, flags=flags, prot=mmap.PROT_READ))


def open_cutout(
    reader: Any, layout: CutoutLayout, fmt: str, name: str | None = None, max_bytes: int = 64 * 2**20
) -> EncodedCutout:
    """Start encoding a cutout read from storage, for sending: what :func:`stream_cutout` streams, in
    pieces without copies and with the length known up front where it can be.

    A streaming format (npy, msgpack) is encoded up to its first piece; its length is known when the
    format says the rest is raw data (``Format.raw_tail``). A file format (hdf5, netcdf, zarr, zip) is
    written whole to a temporary file, which is mapped and deleted: one view of the page cache goes
    out, with its exact length.
    """
    f = get_format(fmt)
    stem = name or default_name(layout)
    source = BlockSource.of_reader(reader, layout, max_bytes=max_bytes)
    if f.encode is not None:
        body = EncodedCutout(b"", iter(f.encode(source, stem)))
        try:
            body.first = next(body.rest, b"")
        except BaseException:
            body.close()
            raise
        if f.raw_tail:
            data = sum(4 * math.prod(layout.shape(p)) for p in layout.plans)  # float32 (see planes)
            body.length = memoryview(body.first).nbytes + data
        return body
    tmp = tempfile.mkdtemp(prefix="cutout-")
    try:
        path = Path(tmp) / f"{stem}{f.suffix}"
        write_source(source, f.name, path)
        view = map_file(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return EncodedCutout(view, length=len(view))


def to_xarray(cutouts: Cutout | Sequence[Cutout]) -> Any:
    """In-memory cutouts as an ``xarray.Dataset`` with the same dims, coords and attrs as the files."""
    import xarray as xr

    source = BlockSource.of_cutouts(cutouts)
    layout = source.layout
    coords = {name: (dims, values, attrs) for name, dims, values, attrs in layout.coordinate_variables()}
    data = {p.variable: np.empty(layout.shape(p), dtype=np.float32) for p in layout.plans}
    for block in source.blocks():
        data[layout.plans[block.var].variable][layout.index(block)] = block.data
    data_vars = {
        plan.variable: (
            layout.dims(plan),
            data[plan.variable],
            {"units": plan.units, "components": list(plan.components)},
        )
        for plan in layout.plans
    }
    return xr.Dataset(data_vars, coords=coords, attrs=layout.attrs())
