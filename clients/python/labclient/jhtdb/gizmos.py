"""givernylocal's "gizmos": the TSV of a getData answer, the HDF5 + XMF pair of a cutout, values and a
contour plot from a cutout. Same call shapes (3.x, and giverny 2.x's where they differ) and same files.

Cutout selections go by grid index through the cutout's own ``x_start``/``x_step`` attributes, so they work
on stretched axes (a channel's y) without recomputing coordinates.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from labclient.errors import InvalidRequest
from labclient.jhtdb.core import TurbDataset, column_names

VECTOR_WIDTH = 3


def interpolation_tsv_header(cube: TurbDataset) -> list[list[str]]:
    """The two header rows JHTDB writes: a description line padded with tabs, then the column names."""
    operator = cube.sint.split("_")[-1] if "_" in cube.sint else "field"
    method = cube.sint.split("_")[0]
    components = cube.components(cube.var)
    columns = column_names(components, operator)
    described = f"dataset: {cube.dataset_title}, variable: {cube.var}, time: {cube.timepoint_original}, "
    if cube.var == "position" or (cube.timepoint_end != -999.9 and cube.delta_t != -999.9):
        described += f"time end: {cube.timepoint_end}, delta t: {cube.delta_t}, "
    described += f"temporal method: {cube.tint}, spatial method: {method}, spatial operator: {operator}"
    return [[described] + [""] * (3 + len(columns)), ["time", "x_point", "y_point", "z_point", *columns]]


def write_interpolation_tsv_file(
    cube: TurbDataset, points: Any, interpolation_data: Any, output_filename: str
) -> Path:
    """Write ``getData``'s answer to ``<output_path>/<output_filename>.tsv``, as JHTDB does.

    One row per point and time: ``time, x_point, y_point, z_point`` then the value columns.
    """
    print("writing the interpolation .tsv file...", flush=True)
    cube.output_path.mkdir(parents=True, exist_ok=True)
    path = cube.output_path / f"{output_filename}.tsv"
    pts = np.asarray(points, dtype=np.float64)
    step = 0.0 if cube.delta_t == -999.9 else float(cube.delta_t)
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter="\t")
        writer.writerows(interpolation_tsv_header(cube))
        for i, frame in enumerate(interpolation_data):
            rows = np.concatenate((pts, np.asarray(frame)), axis=1)
            t = np.full(rows.shape[0], float(cube.timepoint_original) + i * step)
            writer.writerows(np.column_stack((t, rows)))
    print(f"wrote {path}", flush=True)
    return path


def _xmf(cube: TurbDataset, data: Any, filename: str) -> str:
    names = list(data.data_vars)
    nz, ny, nx = (data.sizes[d] for d in ("zcoor", "ycoor", "xcoor"))
    kind = "Vector" if cube.num_values_per_datapoint == VECTOR_WIDTH else "Scalar"
    lines = [
        '<?xml version="1.0" ?>',
        '<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>',
        '<Xdmf Version="2.0">',
        "  <Domain>",
        f'    <Grid Name="{cube.var}" GridType="Collection" CollectionType="Temporal">',
    ]
    for name in names:
        tindex = int(name.rsplit("_", 1)[1])
        item = 'NumberType="Float" Precision="4" Format="HDF"'
        lines += [
            '      <Grid Name="Structured Grid" GridType="Uniform">',
            f'        <Time Value="{tindex}"/>',
            f'        <Topology TopologyType="3DRectMesh" NumberOfElements="{nz} {ny} {nx}"/>',
            '        <Geometry GeometryType="VXVYVZ">',
        ]
        for axis, size in (("x", nx), ("y", ny), ("z", nz)):
            lines += [
                f'          <DataItem Name="{axis.upper()}coor" Dimensions="{size}" {item}>',
                f"            {filename}.h5:/{axis}coor",
                "          </DataItem>",
            ]
        ncomp = data[name].sizes["values"]
        lines += [
            "        </Geometry>",
            f'        <Attribute Name="{cube.var}" AttributeType="{kind}" Center="Node">',
            f'          <DataItem Dimensions="{nz} {ny} {nx} {ncomp}" {item}>',
            f"            {filename}.h5:/{name}",
            "          </DataItem>",
            "        </Attribute>",
            "      </Grid>",
        ]
    lines += ["    </Grid>", "  </Domain>", "</Xdmf>"]
    return "\n".join(lines)


def write_cutout_hdf5_and_xmf_files(cube: TurbDataset, output_data: Any, *args: Any) -> tuple[Path, Path]:
    """Write a cutout to ``<output_filename>.h5`` (netCDF-4) and ``<output_filename>.xmf`` (XDMF for ParaView).

    ``(cube, output_data, output_filename)`` as givernylocal 3.x, or giverny 2.x's
    ``(cube, output_data, axes_ranges, output_filename)``.
    """
    if len(args) not in (1, 2):
        raise InvalidRequest("write_cutout_hdf5_and_xmf_files(dataset, cutout, output_filename)")
    filename = str(args[-1])
    print("writing the cutout .h5 and .xmf files...", flush=True)
    cube.output_path.mkdir(parents=True, exist_ok=True)
    h5 = cube.output_path / f"{filename}.h5"
    xmf = cube.output_path / f"{filename}.xmf"
    output_data.to_netcdf(h5, format="NETCDF4", mode="w")
    xmf.write_text(_xmf(cube, output_data, filename))
    print(f"wrote {h5} and {xmf}", flush=True)
    return h5, xmf


def _positions(data: Any, axis: str, wanted: Any) -> np.ndarray:
    """Array positions along ``axis`` of 1-based grid indices, through the cutout's start and stride."""
    start, stop, step = (int(data.attrs[f"{axis}_{k}"]) for k in ("start", "end", "step"))
    idx = np.atleast_1d(np.asarray(wanted, dtype=np.int64))
    if (idx < start).any() or (idx > stop).any():
        raise InvalidRequest(f"{axis} indices {idx.tolist()} are outside the cutout's [{start}, {stop}]")
    if ((idx - start) % step).any():
        raise InvalidRequest(
            f"{axis} indices {idx.tolist()} are not on the cutout's stride {step} from {start}"
        )
    return (idx - start) // step


def _index_span(lo: int, hi: int, step: int) -> np.ndarray:
    return np.arange(lo, hi + 1, step)


def _variable(cube: TurbDataset, data: Any, time: int | None) -> Any:
    t = int(data.attrs["t_start"]) if time is None else int(time)
    name = f"{cube.var}_{t:04d}"
    if name not in data.data_vars:
        raise InvalidRequest(f"time index {t} is not in this cutout (it holds {sorted(data.data_vars)})")
    return data[name]


def cutout_values(cube: TurbDataset, x: Any, y: Any, z: Any, output_data: Any, *args: Any) -> Any:
    """Values of a cutout at 1-based grid indices ``x``, ``y``, ``z`` (ints or [min, max] spans).

    ``(cube, x, y, z, output_data, time, xyzt_axes_ranges, xyzt_strides)`` as givernylocal 3.x, or giverny
    2.x's ``(cube, x, y, z, output_data, axes_ranges, strides)``. Returns an xarray DataArray.
    """
    time = args[0] if len(args) == 3 else None
    data = output_data
    positions = {}
    for axis, wanted in zip("xyz", (x, y, z), strict=True):
        lo, hi = int(np.min(wanted)), int(np.max(wanted))
        positions[f"{axis}coor"] = _positions(
            data, axis, _index_span(lo, hi, int(data.attrs[f"{axis}_step"]))
        )
    return _variable(cube, data, time).isel(**positions)


def contour_plot(cube: TurbDataset, value_index: int, cutout_data: Any, *args: Any, **kwargs: Any) -> Path:
    """A filled plot of one component on a plane of a cutout, saved to ``<output_filename>.png`` and shown.

    ``(cube, value_index, cutout_data, time, plot_ranges, xyzt_axes_ranges, xyzt_strides, output_filename,
    colormap="inferno", equal_aspect_ratio=True)`` as givernylocal 3.x, or giverny 2.x's ``(cube,
    value_index, cutout_data, plot_ranges, axes_ranges, strides, output_filename, colormap="inferno")``.
    ``plot_ranges`` is 3 x 2, 1-based, with one axis a single index (the plane).
    """
    import matplotlib.pyplot as plt

    if np.ndim(args[0]) == 0:  # 3.x: a time index first
        time, plot_ranges, filename, rest = args[0], args[1], args[4], args[5:]
    else:
        time, plot_ranges, filename, rest = None, args[0], args[3], args[4:]
    colormap = kwargs.get("colormap", rest[0] if rest else "inferno")
    equal = kwargs.get("equal_aspect_ratio", rest[1] if len(rest) > 1 else True)
    data = cutout_data
    ranges = np.asarray(plot_ranges, dtype=np.int64).reshape(3, 2)
    flat = [a for a, (lo, hi) in zip("xyz", ranges, strict=True) if lo == hi]
    if len(flat) != 1:
        raise InvalidRequest("plot_ranges must have exactly one axis with start == end (the plane)")
    components = cube.components(cube.var)
    if not 0 <= int(value_index) < len(components):
        raise InvalidRequest(f"value_index must be in [0, {len(components) - 1}] ({components})")
    picks = {
        f"{a}coor": _positions(data, a, _index_span(lo, hi, int(data.attrs[f"{a}_step"])))
        for a, (lo, hi) in zip("xyz", ranges, strict=True)
    }
    field = _variable(cube, data, time).isel(**picks, values=int(value_index)).squeeze(f"{flat[0]}coor")
    across, up = [f"{a}coor" for a in "xyz" if a != flat[0]]
    fig, ax = plt.subplots(figsize=(7.0, 6.0), dpi=80)
    mesh = field.plot(ax=ax, x=across, y=up, cmap=colormap, add_colorbar=True)
    mesh.colorbar.set_label(f"{cube.var} {components[int(value_index)]}")
    if equal:
        ax.set_aspect("equal")
    t = int(data.attrs["t_start"]) if time is None else int(time)
    plane = flat[0]
    ax.set_title(
        f"{cube.dataset_title}: {cube.var} ({components[int(value_index)]}), "
        f"{plane} index = {ranges['xyz'.index(plane), 0]}, time index = {t}"
    )
    ax.set_xlabel(f"{across[0]} (stride = {data.attrs[f'{across[0]}_step']})")
    ax.set_ylabel(f"{up[0]} (stride = {data.attrs[f'{up[0]}_step']})")
    fig.tight_layout()
    cube.output_path.mkdir(parents=True, exist_ok=True)
    path = cube.output_path / f"{filename}.png"
    fig.savefig(path)
    plt.show()
    plt.close(fig)
    print(f"wrote {path}", flush=True)
    return path
