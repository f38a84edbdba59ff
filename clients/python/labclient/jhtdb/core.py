"""givernylocal's calls (``turb_dataset``, ``getData``, ``getCutout``) answered by a labservice server.

Call shapes and return types follow givernylocal 3.x: ``getData`` gives a list of pandas DataFrames (one per
time, columns named as JHTDB names them, e.g. ``ux`` or ``duxdy``), ``getCutout`` an xarray Dataset with one
variable ``<variable>_<tttt>`` per 1-based time index and dims ``(zcoor, ycoor, xcoor, values)``. As in
givernylocal, the dataset object remembers the last query, which the gizmos (``write_interpolation_tsv_file``,
...) read. Differences: the server address (``url=`` or ``$LABSERVICE_URL``) and the dataset names.
"""

from __future__ import annotations

import sys
import time as _time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labclient.dataset import RemoteDataset
from labclient.errors import InvalidRequest
from labclient.lab import Lab

# givernylocal's placeholder for "no time series / no tracking end": getData(..., option=[-999.9, -999.9]).
NO_OPTION = [-999.9, -999.9]
# JHTDB's public testing token; here it means "my default access" (public, or $LABSERVICE_TOKEN).
JHTDB_TESTING_TOKEN = "edu.jhu.pha.turbulence.testing-201406"
HESSIAN_PAIRS = ("dxdx", "dxdy", "dxdz", "dydy", "dydz", "dzdz")


@dataclass
class TurbDataset:
    """What ``turb_dataset`` returns: the remote dataset plus givernylocal's bookkeeping fields.

    ``var``, ``timepoint_original``, ``timepoint_end``, ``delta_t``, ``sint``, ``tint`` and
    ``num_values_per_datapoint`` describe the last ``getData`` or ``getCutout`` call, as in givernylocal.
    """

    dataset_title: str
    output_path: Path
    auth_token: str | None
    remote: RemoteDataset = field(repr=False)
    var: str = ""
    timepoint_original: Any = None
    timepoint_end: float = NO_OPTION[0]
    delta_t: float = NO_OPTION[1]
    sint: str = "none"
    tint: str = "none"
    num_values_per_datapoint: int = 0
    dataset_name: str = ""

    @property
    def metadata(self) -> dict[str, Any]:
        return self.remote.meta

    @property
    def var_name(self) -> str:  # givernylocal 2.x's name for ``var``
        return self.var

    @property
    def N(self) -> np.ndarray:  # noqa: N802 - JHTDB's name
        """Grid points along x, y, z."""
        grid = self.metadata["grid"]
        return np.array([grid[a]["size"] for a in "xyz"])

    def _spacing(self, axis: str) -> Any:
        g = self.metadata["grid"][axis]
        return np.asarray(g["coordinates"]) if g.get("coordinates") else float(g["step"])

    @property
    def dx(self) -> Any:
        return self._spacing("x")

    @property
    def dy(self) -> Any:
        """The step, or the node coordinates on a stretched axis (as givernylocal's channel)."""
        return self._spacing("y")

    @property
    def dz(self) -> Any:
        return self._spacing("z")

    def components(self, variable: str) -> list[str]:
        variables = self.metadata["variables"]
        if variable == "position":
            return ["x", "y", "z"]
        if variable not in variables:
            raise InvalidRequest(
                f"{variable!r} is not a variable of {self.dataset_title}: {sorted(variables)}"
            )
        return list(variables[variable]["components"])

    def close(self) -> None:
        """Close the connection to the server."""
        self.remote.lab.close()

    def __enter__(self) -> TurbDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def turb_dataset(
    dataset_title: str = "",
    output_path: str | Path = ".",
    auth_token: str | None = None,
    url: str | None = None,
    lab: Lab | None = None,
) -> TurbDataset:
    """Open a dataset the way givernylocal does (``url`` defaults to ``$LABSERVICE_URL``).

    JHTDB's public testing token (or no token) gives the default access: ``$LABSERVICE_TOKEN`` if set,
    else the public limits; requests over the per-request limit are split, not refused.
    """
    if auth_token == JHTDB_TESTING_TOKEN or not auth_token:
        auth_token = None
    lab = lab if lab is not None else Lab(url, token=auth_token)
    out = Path(str(output_path).strip() or ".")
    out.mkdir(parents=True, exist_ok=True)
    return TurbDataset(dataset_title, out, auth_token, lab.dataset(dataset_title))


def column_names(components: list[str], operator: str) -> list[str]:
    """JHTDB's result columns: ``ux``; ``duxdx ...``; ``d2uxdxdx ...``; ``grad2ux``."""
    per = {
        "field": ("{c}",),
        "gradient": ("d{c}dx", "d{c}dy", "d{c}dz"),
        "hessian": tuple(f"d2{{c}}{p}" for p in HESSIAN_PAIRS),
        "laplacian": ("grad2{c}",),
    }
    if operator not in per:
        return []
    return [col.format(c=c) for c in components for col in per[operator]]


@contextmanager
def _reporting(name: str, trace_memory: bool, verbose: bool) -> Any:
    """givernylocal's ``verbose`` progress lines and ``trace_memory`` report, in our words."""
    if verbose:
        print(f"{name}: sending the query...", flush=True)
    start = _time.perf_counter()
    if trace_memory:
        tracemalloc.start()
        begin = [v / 1024**3 for v in tracemalloc.get_traced_memory()]
    try:
        yield
    finally:
        if trace_memory:
            end = [v / 1024**3 for v in tracemalloc.get_traced_memory()]
            tracemalloc.stop()
            print(f"memory traced at start [current, peak] in GB: {begin}")
            print(f"memory traced at end   [current, peak] in GB: {end}", flush=True)
    if verbose:
        seconds = _time.perf_counter() - start
        print(f"{name}: done in {seconds:0.3f} s", flush=True)
        sys.stdout.flush()


def _need(module: str) -> Any:
    from labclient._extras import require

    return require(module, "labclient.jhtdb's getData and getCutout")


def _frame(values: np.ndarray, columns: list[str], time: float) -> Any:
    pd = _need("pandas")

    table = pd.DataFrame(values.reshape(values.shape[0], -1), columns=columns)
    table.index.name = "index"
    table.attrs["time"] = float(time)
    return table


def getData(  # noqa: N802 - JHTDB's name
    cube: TurbDataset,
    var: str,
    timepoint: float,
    temporal_method: str,
    spatial_method: str,
    spatial_operator: str,
    points: Any,
    option: list[float] | None = None,
    return_times: bool = False,
    trace_memory: bool = False,
    verbose: bool = True,
) -> Any:
    """Values at points, one pandas DataFrame per time (givernylocal's ``getData``).

    ``option=[t_end, dt]`` asks for a time series from ``timepoint`` to ``t_end``; with ``var="position"`` it
    tracks particles from ``timepoint`` to ``t_end`` with step ``dt`` and gives their final positions.
    ``[-999.9, -999.9]`` (the default) means a single time. With ``return_times`` the answer is
    ``(frames, times)``; for tracking, ``times`` holds the start time, as givernylocal's does.
    """
    option = list(NO_OPTION) if option is None else [float(v) for v in option]
    if len(option) != 2:
        raise InvalidRequest("option must be [t_end, dt] (or [-999.9, -999.9] for a single time)")
    single = option == NO_OPTION
    ds = cube.remote
    pts = np.asarray(points, dtype=np.float64)
    cube.var, cube.timepoint_original, cube.tint = var, timepoint, temporal_method
    cube.timepoint_end, cube.delta_t = option
    cube.sint = spatial_method if spatial_operator == "field" else f"{spatial_method}_{spatial_operator}"
    with _reporting("getData", trace_memory, verbose):
        if var == "position":
            if single:
                raise InvalidRequest("particle tracking needs option=[t_end, dt]")
            positions = ds.track(
                pts,
                float(timepoint),
                option[0],
                option[1],
                spatial=spatial_method,
                temporal=temporal_method,
            )
            cube.num_values_per_datapoint = 3
            frames = [_frame(positions[-1], ["x", "y", "z"], option[0])]
            times = np.array([float(timepoint)])
        else:
            series = None if single else (float(timepoint), option[0], option[1])
            res = ds.query_points(
                var,
                pts,
                time=float(timepoint) if single else None,
                times=series,
                spatial=spatial_method,
                temporal=temporal_method,
                operator=spatial_operator,
            )
            values = res["values"][None] if single else res["values"]
            components = cube.components(var)
            cube.num_values_per_datapoint = len(components)
            width = int(np.prod(values.shape[2:]))
            columns = column_names(components, spatial_operator)
            if len(columns) != width:
                columns = list(res["components"])
            times = np.asarray(res["times"], dtype=np.float64)
            frames = [_frame(values[i], columns, times[i]) for i in range(values.shape[0])]
    return (frames, times) if return_times else frames


def _cutout_args(args: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(xyzt ranges 4 x 2, xyzt strides 4) from givernylocal 3.x's ``(ranges, strides)`` or giverny
    2.x's ``(time, xyz ranges, xyz strides)``."""
    if len(args) == 3:
        t, ranges, steps = args
        t = int(t)
        ranges = np.vstack([np.asarray(ranges, dtype=np.int64).reshape(-1, 2), [[t, t]]])
        steps = np.append(np.asarray(steps, dtype=np.int64), 1)
        return ranges, steps
    if len(args) != 2:
        raise InvalidRequest("getCutout(dataset, variable, xyzt_axes_ranges, xyzt_strides)")
    return np.asarray(args[0], dtype=np.int64), np.asarray(args[1], dtype=np.int64)


def getCutout(  # noqa: N802 - JHTDB's name
    cube: TurbDataset,
    var: str,
    *args: Any,
    trace_memory: bool = False,
    verbose: bool = True,
) -> Any:
    """A cutout as an xarray Dataset (givernylocal's ``getCutout``).

    ``getCutout(dataset, var, xyzt_axes_ranges, xyzt_strides)``: a 4 x 2 array of 1-based, inclusive
    ``[start, end]`` grid indices for x, y, z and the time index, and 4 strides. giverny 2.x's
    ``getCutout(dataset, var, time, axes_ranges, strides)`` works too. The Dataset holds one variable
    ``<var>_<tttt>`` per time index, dims ``(zcoor, ycoor, xcoor, values)``, physical coordinates, and
    giverny's attributes (``t_start``, ``x_step``, ...).
    """
    xr = _need("xarray")
    ranges, steps = _cutout_args(args)
    if ranges.shape != (4, 2) or steps.shape != (4,):
        raise InvalidRequest(
            f"axes_ranges must be 4 x 2 ([start, end] for x, y, z, t) and strides 4 ints; "
            f"got shapes {ranges.shape} and {steps.shape}"
        )
    if (ranges[:, 1] < ranges[:, 0]).any() or (steps < 1).any() or (ranges < 1).any():
        raise InvalidRequest("each axes_ranges row needs 1 <= start <= end, and every stride must be >= 1")
    times = cube.remote.times
    t_first, t_last = int(ranges[3, 0]), int(ranges[3, 1])
    if t_last > len(times):
        raise InvalidRequest(f"time indices in axes_ranges are 1-based and must be in [1, {len(times)}]")
    components = cube.components(var)
    cube.var, cube.timepoint_original, cube.num_values_per_datapoint = var, t_last, len(components)
    cube.timepoint_end, cube.delta_t = NO_OPTION
    cube.sint, cube.tint = "none", "none"
    cube.dataset_name = f"{var}_{t_last:04d}"
    # 1-based inclusive [start, end] -> 0-based start, exclusive stop.
    xyz = [(int(r[0]) - 1, int(r[1]), int(s)) for r, s in zip(ranges[:3], steps[:3], strict=True)]
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    with _reporting("getCutout", trace_memory, verbose):
        for t1 in range(t_first, t_last + 1, int(steps[3])):
            cut = cube.remote.cutout(var, float(times[t1 - 1]), *xyz, as_numpy=True)
            coords = {f"{a}coor": np.asarray(cut[a], dtype=np.float64) for a in "zyx"}
            data_vars[f"{var}_{t1:04d}"] = xr.DataArray(
                cut["data"],
                dims=("zcoor", "ycoor", "xcoor", "values"),
                attrs={"time": float(times[t1 - 1])},
            )
    attrs: dict[str, Any] = {"dataset": cube.dataset_title}
    attrs.update(t_start=t_first, t_end=t_last, t_step=int(steps[3]))
    for i, a in enumerate("xyz"):
        attrs.update(
            {f"{a}_start": int(ranges[i, 0]), f"{a}_end": int(ranges[i, 1]), f"{a}_step": int(steps[i])}
        )
    attrs["filterWidth"] = 1
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
