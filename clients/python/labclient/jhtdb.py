"""JHTDB's Python call shape (givernylocal 3.x) on top of labservice, so old notebooks port by an import.

>>> from labclient.jhtdb import turb_dataset, getData, getCutout
>>> dataset = turb_dataset(dataset_title="isotropic64", output_path="./out", auth_token=TOKEN)
>>> result = getData(dataset, "velocity", 0.3, "none", "lag4", "field", points)   # list of DataFrames
>>> cut = getCutout(dataset, "velocity", [[1, 64], [1, 64], [1, 32], [1, 1]], [2, 2, 1, 1])

Differences from JHTDB are the server address (``url=`` or ``$LABSERVICE_URL``) and the dataset names.
As in givernylocal, cutout ranges are 1-based and inclusive, in the order x, y, z, t.
"""

from __future__ import annotations

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


@dataclass
class TurbDataset:
    """What ``turb_dataset`` returns: the remote dataset plus JHTDB's bookkeeping fields."""

    dataset_title: str
    output_path: Path
    auth_token: str | None
    remote: RemoteDataset = field(repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.remote.meta

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
    else the public limits.
    """
    if auth_token == JHTDB_TESTING_TOKEN or not auth_token:
        auth_token = None
    lab = lab if lab is not None else Lab(url, token=auth_token)
    out = Path(output_path)
    out.mkdir(parents=True, exist_ok=True)
    return TurbDataset(dataset_title, out, auth_token, lab.dataset(dataset_title))


def _columns(components: list[str], width: int, operator: str) -> list[str]:
    if len(components) == width:
        return list(components)
    if operator == "gradient":
        return [f"d{c}d{a}" for c in components for a in "xyz"][:width]
    if operator == "hessian":
        return [f"d2{c}d{ab}" for c in components for ab in ("xx", "xy", "xz", "yy", "yz", "zz")][:width]
    return [f"c{i}" for i in range(width)]


def _frame(values: np.ndarray, columns: list[str], time: float) -> Any:
    import pandas as pd

    table = pd.DataFrame(values.reshape(values.shape[0], -1), columns=columns)
    table.attrs["time"] = float(time)
    return table


def getData(  # noqa: N802 - JHTDB's name
    dataset: TurbDataset,
    variable: str,
    time: float,
    temporal_method: str,
    spatial_method: str,
    spatial_operator: str,
    points: Any,
    option: list[float] | None = None,
    return_times: bool = False,
    trace_memory: bool = False,
    verbose: bool = False,
) -> Any:
    """Values at points, one pandas DataFrame per time (JHTDB's ``getData``).

    ``option=[t_end, dt]`` asks for a time series from ``time`` to ``t_end``; with ``variable="position"``
    it tracks particles from ``time`` to ``t_end`` with step ``dt`` and returns the final positions.
    givernylocal's "no option" value ``[-999.9, -999.9]`` means a single time. ``trace_memory`` and
    ``verbose`` are accepted so that givernylocal calls run unchanged; they do nothing here.
    """
    if option is not None and [float(v) for v in option] == NO_OPTION:
        option = None
    ds = dataset.remote
    pts = np.asarray(points, dtype=np.float64)
    if variable == "position":
        if option is None or len(option) != 2:
            raise InvalidRequest("particle tracking needs option=[t_end, dt]")
        positions, times = ds.track(
            pts,
            float(time),
            float(option[0]),
            float(option[1]),
            spatial=spatial_method,
            temporal=temporal_method,
            return_times=True,
        )
        frames = [_frame(positions[-1], ["x", "y", "z"], times[-1])]
        return (frames, [float(times[-1])]) if return_times else frames
    series = None
    if option is not None:
        if len(option) != 2:
            raise InvalidRequest("option must be [t_end, dt] for a time series")
        series = (float(time), float(option[0]), float(option[1]))
    res = ds.query_points(
        variable,
        pts,
        time=None if series else float(time),
        times=series,
        spatial=spatial_method,
        temporal=temporal_method,
        operator=spatial_operator,
    )
    values = res["values"] if series else res["values"][None]
    width = int(np.prod(values.shape[2:]))
    columns = _columns(list(res["components"]), width, spatial_operator)
    times = [float(t) for t in res["times"]]
    frames = [_frame(values[i], columns, times[i]) for i in range(values.shape[0])]
    return (frames, times) if return_times else frames


def getCutout(  # noqa: N802 - JHTDB's name
    dataset: TurbDataset,
    variable: str,
    axes_ranges: Any,
    strides: Any,
    trace_memory: bool = False,
    verbose: bool = False,
) -> Any:
    """A cutout as an xarray Dataset with dims (zcoor, ycoor, xcoor, values), one variable per time.

    ``axes_ranges`` is a 4 x 2 array of [start, end] for x, y, z, t, 1-based and inclusive; ``strides``
    holds 4 steps. Variables are named ``<variable>_<tttt>`` with the 1-based time index, as in giverny.
    ``trace_memory`` and ``verbose`` are accepted for givernylocal compatibility and do nothing.
    """
    import xarray as xr

    ranges = np.asarray(axes_ranges, dtype=np.int64)
    steps = np.asarray(strides, dtype=np.int64)
    if ranges.shape != (4, 2) or steps.shape != (4,):
        raise InvalidRequest(
            f"axes_ranges must be 4 x 2 ([start, end] for x, y, z, t) and strides 4 ints; "
            f"got shapes {ranges.shape} and {steps.shape}"
        )
    if (ranges[:, 1] < ranges[:, 0]).any() or (steps < 1).any():
        raise InvalidRequest("each axes_ranges row needs end >= start, and every stride must be >= 1")
    times = dataset.remote.times
    t_first, t_last = int(ranges[3, 0]), int(ranges[3, 1])
    if t_first < 1 or t_last > len(times):
        raise InvalidRequest(f"time indices in axes_ranges are 1-based and must be in [1, {len(times)}]")
    # 1-based inclusive [start, end] -> 0-based start, exclusive stop.
    xyz = [(int(r[0]) - 1, int(r[1]), int(s)) for r, s in zip(ranges[:3], steps[:3], strict=True)]
    out = xr.Dataset()
    for t1 in range(t_first, t_last + 1, int(steps[3])):
        cut = dataset.remote.cutout(variable, float(times[t1 - 1]), *xyz, as_numpy=True)
        name = f"{variable}_{t1:04d}"
        out[name] = xr.DataArray(
            cut["data"],
            dims=("zcoor", "ycoor", "xcoor", "values"),
            coords={
                "zcoor": cut["z"],
                "ycoor": cut["y"],
                "xcoor": cut["x"],
                "values": np.arange(cut["data"].shape[-1]),
            },
            attrs={
                "time": float(times[t1 - 1]),
                "components": cut["components"],
                **{k: v for k, v in cut["attrs"].items() if isinstance(v, (str, int, float))},
            },
        )
    out.attrs.update({"dataset": dataset.dataset_title, "variable": variable, "strides": steps.tolist()})
    return out
