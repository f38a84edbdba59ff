"""Cutouts: subvolumes of a dataset read chunk by chunk, written as HDF5+XDMF, NetCDF, zarr, npy, msgpack.

Nothing here knows about HTTP. Typical use::

    plan = plan_cutout(reader.meta, "velocity", x="0:64:2", y=(0, 64, 2), z=None)
    if plan.nbytes > limit: ...                      # checked before any read
    cut = read_cutout(reader, plan, t_index=3)       # Cutout: data (nz, ny, nx, nc) + coordinates
    write_cutout(cut, "hdf5", "out.h5")              # also writes out.xmf
    for piece in stream_cutout(reader, layout_for(reader, plan, [3]), "netcdf"): ...
"""

from labservice.cutout.formats import (
    FORMATS,
    FormatInfo,
    check_format,
    decode_msgpack,
    default_name,
    encode_cutout,
    iter_encoded,
    iter_layout,
    pack_array,
    stream_cutout,
    to_xarray,
    unpack_array,
    write_cutout,
    write_layout,
)
from labservice.cutout.layout import CutoutLayout, blocks_from_cutouts, blocks_from_reader, layout_for
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
from labservice.cutout.xdmf import xdmf_text

__all__ = [
    "FORMATS",
    "AxisRange",
    "Cutout",
    "CutoutBlock",
    "CutoutLayout",
    "CutoutPlan",
    "FormatInfo",
    "blocks_from_cutouts",
    "blocks_from_reader",
    "check_format",
    "cutout_nbytes",
    "cutout_shape",
    "cutout_slice_png",
    "decode_msgpack",
    "default_name",
    "encode_cutout",
    "iter_cutout_blocks",
    "iter_encoded",
    "iter_layout",
    "layout_for",
    "pack_array",
    "parse_range",
    "plan_cutout",
    "read_cutout",
    "render_slice_png",
    "stream_cutout",
    "time_index",
    "to_xarray",
    "unpack_array",
    "write_cutout",
    "write_layout",
    "xdmf_text",
]
