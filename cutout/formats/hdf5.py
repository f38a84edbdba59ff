"""``hdf5``: coordinates ``x``, ``y``, ``z`` (and ``time``) as HDF5 dimension scales, plus the ``.xmf``
XDMF sidecar next to the file, so ParaView and VisIt open it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labservice.cutout.formats.common import check_names, storage_chunks
from labservice.cutout.formats.registry import Format, register
from labservice.cutout.formats.xdmf import xdmf_text
from labservice.cutout.layout import BlockSource


def write_hdf5(source: BlockSource, path: Path) -> list[Path]:
    """Write ``path`` and ``<path stem>.xmf``; returns both."""
    import h5py

    layout = source.layout
    check_names(layout)
    with h5py.File(path, "w") as f:
        scales = {}
        for name in ("x", "y", "z"):
            d = f.create_dataset(name, data=layout.coords(name))
            d.make_scale(name)
            d.attrs["axis"] = name.upper()
            scales[name] = d
            f.create_dataset(f"{name}_index", data=layout.indices(name))
        if layout.time_axis:
            d = f.create_dataset("time", data=np.asarray(layout.times, dtype=np.float64))
            d.make_scale("time")
            scales["time"] = d
            f.create_dataset("time_index", data=np.asarray(layout.t_indices, dtype=np.int64))
        dsets = []
        for plan in layout.plans:
            shape = layout.shape(plan)
            d = f.create_dataset(
                plan.variable, shape=shape, dtype="<f4", chunks=storage_chunks(source, shape)
            )
            for dim, label in zip(d.dims, layout.dims(plan), strict=True):
                dim.label = label
                if label in scales:
                    dim.attach_scale(scales[label])
            d.attrs["units"] = plan.units
            d.attrs["components"] = list(plan.components)
            dsets.append(d)
        for key, value in layout.attrs().items():
            f.attrs[key] = value
        for block in source.blocks():
            dsets[block.var][layout.index(block)] = block.data
    xmf = path.with_suffix(".xmf")
    xmf.write_text(xdmf_text(layout, path.name))
    return [path, xmf]


FORMAT = register(
    Format(
        "hdf5",
        "application/x-hdf5",
        ".h5",
        "hdf5 (coordinates as dimension scales)",
        write=write_hdf5,
        aliases=("h5",),
        jobs=True,
        order=10,
    )
)
