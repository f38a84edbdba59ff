"""Cutouts: subvolumes of a dataset read chunk by chunk, written as HDF5+XDMF, NetCDF, zarr, npy, msgpack.

Nothing here knows about HTTP. Typical use::

    plan = plan_cutout(reader.meta, "velocity", x="0:64:2", y=(0, 64, 2), z=None)
    if plan.nbytes > limit: ...                      # checked before any read
    cut = read_cutout(reader, plan, t_index=3)       # Cutout: data (nz, ny, nx, nc) + coordinates
    write_cutout(cut, "hdf5", "out.h5")              # also writes out.xmf
    for piece in stream_cutout(reader, layout_for(reader, plan, [3]), "netcdf"): ...
"""

from labservice.cutout import formats as _formats
from labservice.cutout.formats import *  # noqa: F403  (the format registry and writers: formats.__all__)
from labservice.cutout.layout import (
    Block,
    BlockSource,
    CutoutLayout,
    blocks_from_cutouts,
    blocks_from_reader,
    layout_for,
)
from labservice.cutout.quicklook import cutout_slice_png, render_slice_png
from labservice.cutout.region import (
    AxisRange,
    Cutout,
    CutoutBlock,
    CutoutPlan,
    cutout_nbytes,
    cutout_shape,
    iter_cutout_blocks,
    parse_range,
    plan_cutout,
    read_cutout,
    time_index,
)

__all__ = [
    *_formats.__all__,
    "AxisRange",
    "Block",
    "BlockSource",
    "Cutout",
    "CutoutBlock",
    "CutoutLayout",
    "CutoutPlan",
    "blocks_from_cutouts",
    "blocks_from_reader",
    "cutout_nbytes",
    "cutout_shape",
    "cutout_slice_png",
    "iter_cutout_blocks",
    "layout_for",
    "parse_range",
    "plan_cutout",
    "read_cutout",
    "render_slice_png",
    "time_index",
]
