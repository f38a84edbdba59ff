"""``netcdf``: NETCDF4 with dimensions ([time,] z, y, x, component), coordinate variables, and the
component names both as a string coordinate and as each variable's ``components`` attribute."""

from __future__ import annotations

from pathlib import Path

from labservice.cutout.formats.common import check_names, storage_chunks
from labservice.cutout.formats.registry import Format, register
from labservice.cutout.layout import BlockSource


def write_netcdf(source: BlockSource, path: Path) -> list[Path]:
    import netCDF4

    layout = source.layout
    check_names(layout)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        if layout.time_axis:
            nc.createDimension("time", len(layout.times))
        for name in ("z", "y", "x"):
            nc.createDimension(name, layout.coords(name).size)
        for name, dims, values, attrs in layout.coordinate_variables():
            if values.dtype.kind == "O":  # component names: a dimension and a string variable
                nc.createDimension(name, len(values))
                nc.createVariable(name, str, dims)[:] = values
                continue
            v = nc.createVariable(name, values.dtype.str[1:], dims)
            v[:] = values
            if attrs:
                v.setncatts(attrs)
        out = []
        for plan in layout.plans:
            chunks = storage_chunks(source, layout.shape(plan))
            v = nc.createVariable(
                plan.variable,
                "f4",
                layout.dims(plan),
                chunksizes=chunks,
                contiguous=chunks is None,
            )
            v.setncatts(layout.variable_attrs(plan))
            out.append(v)
        nc.setncatts(layout.attrs())
        for block in source.blocks():
            out[block.var][layout.index(block)] = block.data
    return [path]


FORMAT = register(
    Format(
        "netcdf",
        "application/x-netcdf",
        ".nc",
        "netcdf (NETCDF4)",
        write=write_netcdf,
        aliases=("nc", "netcdf4"),
        jobs=True,
        order=40,
    )
)
