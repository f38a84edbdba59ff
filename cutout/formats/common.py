"""Checks and helpers shared by the format modules."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from labservice.cutout.layout import BlockSource, CutoutLayout
from labservice.errors import InvalidInput

RESERVED_NAMES = {"x", "y", "z", "time", "component", "x_index", "y_index", "z_index", "time_index"}


def check_names(layout: CutoutLayout) -> None:
    """Variables may not take the name of a coordinate in the same file."""
    coords = RESERVED_NAMES | {layout.component_dim(p) for p in layout.plans}
    clash = coords.intersection(layout.variables)
    if clash:
        raise InvalidInput(f"variable names {sorted(clash)} clash with coordinate names in output files")


def one_variable(layout: CutoutLayout, fmt: str) -> None:
    if len(layout.plans) != 1:
        raise InvalidInput(
            f"{fmt} holds one variable; got {layout.variables}. Ask for hdf5, netcdf or zarr to get several."
        )


def planes(source: BlockSource) -> Iterator[np.ndarray]:
    """The blocks as whole z-slabs in C order (time, then z), float32 little-endian; checks the order."""
    layout = source.layout
    nz, ny, nx = layout.spatial_shape
    expect = (0, 0)
    for block in source.blocks(planes=True):
        z0, y0, x0 = block.corner
        if (block.time, z0) != expect or (y0, x0) != (0, 0) or block.data.shape[1:3] != (ny, nx):
            raise ValueError(f"blocks out of order: expected whole planes from (time, z) = {expect}")
        z1 = z0 + block.data.shape[0]
        expect = (block.time, z1) if z1 < nz else (block.time + 1, 0)
        yield np.ascontiguousarray(block.data, dtype="<f4")


def storage_chunks(source: BlockSource, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The source's (z, y, x) chunk hint as a chunk shape for an array of ``shape`` (None: contiguous)."""
    if source.chunks is None:
        return None
    lead = (1,) * (len(shape) - 4)
    return tuple(min(c, n) for c, n in zip((*lead, *source.chunks, shape[-1]), shape, strict=True))


def zip_add(z: zipfile.ZipFile, path: Path, arcname: str) -> None:
    """Add a file with big copy buffers (``ZipFile.write`` copies 8 KiB at a time, several times slower)."""
    info = zipfile.ZipInfo.from_file(path, arcname)
    info.compress_type = zipfile.ZIP_STORED
    with open(path, "rb") as src, z.open(info, "w", force_zip64=True) as dst:
        shutil.copyfileobj(src, dst, 4 << 20)


def zip_dir(src: Path, dest: Path) -> None:
    """Zip a directory tree with paths relative to it, uncompressed (chunks are compressed already)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for root, _dirs, files in os.walk(src):
            for name in sorted(files):
                full = Path(root) / name
                zip_add(z, full, full.relative_to(src).as_posix())
