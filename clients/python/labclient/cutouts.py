"""Turn the server's msgpack cutout into numpy arrays or an xarray Dataset with physical coordinates."""

from __future__ import annotations

from typing import Any

import numpy as np


def _writable(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a if a.flags.writeable else a.copy()


def cutout_to_numpy(payload: dict[str, Any]) -> dict[str, Any]:
    """``{"data", "x", "y", "z", "x_index", ..., "time", "components", "dims", "attrs"}``."""
    coords = payload["coords"]
    out: dict[str, Any] = {"data": _writable(payload["data"]), "dims": list(payload["dims"])}
    for name in ("x", "y", "z", "x_index", "y_index", "z_index", "time"):
        out[name] = np.asarray(coords[name])
    out["components"] = list(coords["component"])
    out["attrs"] = dict(payload["attrs"])
    return out


def cutout_to_xarray(payload: dict[str, Any]) -> Any:
    """An ``xarray.Dataset``: one data variable with dims (z, y, x, component), physical coordinates
    ``x``/``y``/``z``, grid indices ``x_index``/..., and attributes (dataset, time, strides, units, ...)."""
    from labclient._extras import require

    xr = require("xarray", "cutouts as xarray", "pass as_numpy=True")
    arrays = cutout_to_numpy(payload)
    attrs = arrays["attrs"]
    dims = arrays["dims"]
    cdim = dims[-1]
    coords: dict[str, Any] = {}
    for name in ("x", "y", "z"):
        coords[name] = (name, arrays[name], {"axis": name.upper()})
        coords[f"{name}_index"] = (name, arrays[f"{name}_index"])
    coords[cdim] = (cdim, np.array(arrays["components"], dtype=object))
    times = arrays["time"]
    coords["time"] = ("time", times) if "time" in dims else ((), float(times[0]))
    variable = attrs.get("variable", "data")
    data_attrs = {"units": attrs.get("units", ""), "components": arrays["components"]}
    return xr.Dataset({variable: (dims, arrays["data"], data_attrs)}, coords=coords, attrs=attrs)
