"""``zarr``: a zarr v3 group with consolidated metadata (zipped when served over HTTP), which
``xarray.open_zarr`` opens with its coordinates.

Jobs create the same group (with shards and a NaN fill) before their tasks fill it, and read it back
through :func:`group_source` to write the other formats.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from labservice.cutout.formats.common import check_names, zip_dir
from labservice.cutout.formats.registry import Format, register
from labservice.cutout.layout import Block, BlockSource, CutoutLayout


def create_group(
    store: Any,
    layout: CutoutLayout,
    chunks: tuple[int, int, int] | None = None,
    shards: tuple[int, int, int] | None = None,
    fill_value: float | None = None,
) -> Any:
    """Create the group: coordinates, attributes and one empty float32 array per variable.

    ``chunks`` and ``shards`` are (z, y, x); the time axis is chunked by one time and the component axis
    whole. Arrays are uncompressed: float32 turbulence barely compresses and zstd halves the write speed.
    """
    import zarr

    check_names(layout)
    root = zarr.open_group(store, mode="w", zarr_format=3)
    for name, dims, values, attrs in layout.coordinate_variables():
        # Variable-length strings have a stable v3 spelling; fixed-width numpy strings do not.
        dtype = str if values.dtype.kind in "UO" else values.dtype
        a = root.create_array(name, shape=values.shape, dtype=dtype, dimension_names=list(dims))
        a[...] = values.astype(str) if dtype is str else values
        if attrs:
            a.attrs.update(attrs)
    nz, ny, nx = layout.spatial_shape
    inner = chunks or (min(nz, 16), min(ny, 128), min(nx, 128))
    lead = (1,) if layout.time_axis else ()
    for plan in layout.plans:
        ncomp = len(plan.components)
        root.create_array(
            plan.variable,
            shape=layout.shape(plan),
            chunks=(*lead, *inner, ncomp),
            shards=(*lead, *shards, ncomp) if shards else None,
            dtype="float32",
            compressors=None,
            fill_value=fill_value,
            dimension_names=list(layout.dims(plan)),
            attributes=layout.variable_attrs(plan),
        )
    root.attrs.update(layout.attrs())
    return root


def consolidate(store: Any) -> None:
    import zarr

    # Consolidated metadata is not (yet) in the zarr v3 spec and zarr warns about it; xarray opens
    # a consolidated store without probing every array, so we write it anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)


def group_source(group: Any, layout: CutoutLayout) -> BlockSource:
    """Read a group made by :func:`create_group` back as blocks, one shard (or plane of shards) at a time."""
    arrays = [group[p.variable] for p in layout.plans]
    first = arrays[0]
    step = (first.shards or first.chunks)[-4:-1]
    nz, ny, nx = layout.spatial_shape

    def read(planes: bool) -> Iterator[Block]:
        ys = [0] if planes else range(0, ny, step[1])
        xs = [0] if planes else range(0, nx, step[2])
        for vi, a in enumerate(arrays):
            for ti in range(len(layout.times)):
                lead = (ti,) if layout.time_axis else ()
                for z0 in range(0, nz, step[0]):
                    for y0 in ys:
                        for x0 in xs:
                            y1, x1 = (ny, nx) if planes else (y0 + step[1], x0 + step[2])
                            box = (slice(z0, z0 + step[0]), slice(y0, y1), slice(x0, x1))
                            yield Block(vi, ti, (z0, y0, x0), np.asarray(a[(*lead, *box)]))

    return BlockSource(layout, read, chunks=tuple(first.chunks[-4:-1]))


def write_zarr(source: BlockSource, path: Path) -> list[Path]:
    """A directory store, or a zip of one when ``path`` ends in ``.zip``."""
    if path.name.endswith(".zip"):
        with tempfile.TemporaryDirectory(prefix="cutout-") as tmp:
            store = Path(tmp) / "store.zarr"
            write_zarr(source, store)
            zip_dir(store, path)
        return [path]
    layout = source.layout
    root = create_group(str(path), layout, chunks=source.chunks)
    arrays = [root[p.variable] for p in layout.plans]
    for block in source.blocks():
        arrays[block.var][layout.index(block)] = block.data
    consolidate(str(path))
    return [path]


FORMAT = register(
    Format(
        "zarr",
        "application/zip",
        ".zarr.zip",
        "zarr (a zarr v3 group, zipped)",
        write=write_zarr,
        jobs=True,
        order=50,
    )
)
