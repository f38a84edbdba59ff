"""Files for the command line: points in (CSV, TSV, Parquet, stdin), values out (CSV, Parquet, HDF5, NetCDF).

CSV and TSV need only numpy; Parquet needs the ``pandas`` extra (pyarrow), HDF5 and NetCDF the ``files``
extra (h5py, netCDF4). A problem with the user's file raises :class:`InputError` saying what to change.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from labclient._extras import require

POINT_INPUTS = {".csv": ",", ".tsv": "\t", ".txt": None, ".parquet": "parquet", ".pq": "parquet"}
POINT_OUTPUTS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".h5": "hdf5",
                 ".hdf5": "hdf5", ".nc": "netcdf"}  # fmt: skip
CUTOUT_SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".nc": "netcdf", ".zarr.zip": "zarr", ".npy": "npy",
                   ".msgpack": "msgpack", ".xmf": "xdmf", ".zip": "zip"}  # fmt: skip
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}


class InputError(ValueError):
    """The user's input file cannot be used as it is."""


class SuffixError(ValueError):
    """A file name whose suffix names no format we can read or write (a usage error)."""


def format_for(path: str, table: dict[str, str], what: str) -> str:
    """The format a file name asks for by its suffix (``-`` is CSV on stdout)."""
    if path == "-":
        return "csv"
    name = path.lower()
    for suffix in sorted(table, key=len, reverse=True):  # ".zarr.zip" before ".zip"
        if name.endswith(suffix):
            return table[suffix]
    known = ", ".join(sorted(table))
    raise SuffixError(f"{what} {path!r}: unknown suffix; use one of {known}")


# -- points in ------------------------------------------------------------------------------------------
def _xyz(columns: list[str], where: str) -> list[int]:
    lower = [c.strip().lower() for c in columns]
    missing = [a for a in "xyz" if a not in lower]
    if missing:
        raise InputError(
            f"{where} has columns {columns}; it needs columns named x, y and z (missing: {', '.join(missing)})"
        )
    return [lower.index(a) for a in "xyz"]


def _read_delimited(text: str, delimiter: str | None, where: str) -> np.ndarray:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"{where} is empty; it needs a header line with x, y, z and one line per point")
    if delimiter is None:
        delimiter = "," if "," in lines[0] else ("\t" if "\t" in lines[0] else " ")
    rows = list(csv.reader(lines, delimiter=delimiter, skipinitialspace=True))
    index = _xyz(rows[0], where)
    out = np.empty((len(rows) - 1, 3), dtype=np.float64)
    for n, row in enumerate(rows[1:], start=2):
        try:
            out[n - 2] = [float(row[i]) for i in index]
        except (ValueError, IndexError):
            raise InputError(f"{where}, line {n}: x, y, z must be numbers; got {row}") from None
    if not len(out):
        raise InputError(f"{where} has a header but no points")
    return out


def _read_parquet(source: Any, where: str) -> np.ndarray:
    pq = require("pyarrow.parquet", "Parquet files")
    try:
        table = pq.read_table(source)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise InputError(f"{where} is not a readable Parquet file: {exc}") from None
    index = _xyz(table.column_names, where)
    try:
        cols = [table.column(i).to_numpy().astype(np.float64) for i in index]
    except (ValueError, TypeError):
        raise InputError(f"{where}: columns x, y, z must be numbers") from None
    return np.stack(cols, axis=1)


def read_points(path: str) -> np.ndarray:
    """(N, 3) points from a CSV/TSV/Parquet file with x, y, z columns, or from stdin with ``-``."""
    if path == "-":
        data = sys.stdin.buffer.read()
        if data.startswith(b"PAR1"):
            return _read_parquet(io.BytesIO(data), "stdin")
        return _read_delimited(data.decode("utf-8", errors="replace"), None, "stdin")
    kind = POINT_INPUTS[format_for(path, {k: k for k in POINT_INPUTS}, "input")]
    file = Path(path)
    if not file.is_file():
        raise InputError(f"input file {path} does not exist")
    if kind == "parquet":
        return _read_parquet(str(file), path)
    return _read_delimited(file.read_text(encoding="utf-8", errors="replace"), kind, path)


# -- values out -----------------------------------------------------------------------------------------
def flat_table(result: dict[str, Any], points: np.ndarray, series: bool) -> dict[str, np.ndarray]:
    """Columns [time,] x, y, z, then one per component name, one row per point (and time)."""
    values = np.asarray(result["values"])
    names = list(result["components"])
    ntimes = values.shape[0] if series else 1
    rows = values.reshape(ntimes * points.shape[0], -1)
    if rows.shape[1] != len(names):  # an older server: number the columns
        names = [f"c{i}" for i in range(rows.shape[1])]
    table: dict[str, np.ndarray] = {}
    if series:
        table["time"] = np.repeat(np.asarray(result["times"], dtype=np.float64), points.shape[0])
    for i, axis in enumerate("xyz"):
        table[axis] = np.tile(points[:, i], ntimes)
    for i, name in enumerate(names):
        table[name] = rows[:, i]
    return table


def _write_csv(table: dict[str, np.ndarray], out: Any, delimiter: str) -> None:
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(table)
    cols = [c.tolist() for c in table.values()]
    writer.writerows(zip(*cols, strict=True))


def _labelled(result: dict[str, Any], points: np.ndarray, series: bool) -> dict[str, Any]:
    values = np.asarray(result["values"])
    lead = (values.shape[0], points.shape[0]) if series else (points.shape[0],)
    return {
        "values": values.reshape(*lead, -1),
        "components": [str(c) for c in result["components"]],
        "times": np.asarray(result["times"], dtype=np.float64),
    }


def write_values(
    path: str, result: dict[str, Any], points: np.ndarray, series: bool, attrs: dict[str, Any]
) -> None:
    """Write point values where ``path``'s suffix says; ``-`` writes CSV to stdout."""
    fmt = format_for(path, POINT_OUTPUTS, "output")
    name = (
        f"{attrs['variable']}" if attrs["operator"] == "field" else f"{attrs['variable']}_{attrs['operator']}"
    )
    if fmt in ("csv", "tsv"):
        table = flat_table(result, points, series)
        delimiter = "," if fmt == "csv" else "\t"
        if path == "-":
            _write_csv(table, sys.stdout, delimiter)
        else:
            with open(path, "w", newline="", encoding="utf-8") as f:
                _write_csv(table, f, delimiter)
    elif fmt == "parquet":
        pa = require("pyarrow", "Parquet files")
        pq = require("pyarrow.parquet", "Parquet files")
        table = flat_table(result, points, series)
        meta = {k.encode(): str(v).encode() for k, v in attrs.items()}
        pq.write_table(pa.table(table).replace_schema_metadata(meta), path)
    elif fmt == "hdf5":
        _write_hdf5(path, _labelled(result, points, series), points, series, attrs, name)
    else:
        _write_netcdf(path, _labelled(result, points, series), points, series, attrs, name)


def _write_hdf5(path: str, lab: dict[str, Any], points: np.ndarray, series: bool, attrs: dict[str, Any],
                name: str) -> None:  # fmt: skip
    h5py = require("h5py", "HDF5 files")
    with h5py.File(path, "w") as f:
        for i, axis in enumerate("xyz"):
            f[axis] = points[:, i]
        f["time"] = lab["times"]
        f[name] = lab["values"]
        f[name].attrs["dims"] = ["time", "point", "component"] if series else ["point", "component"]
        f[name].attrs["components"] = lab["components"]
        f["component"] = np.array(lab["components"], dtype=h5py.string_dtype())
        for key, value in attrs.items():
            f.attrs[key] = value


def _write_netcdf(path: str, lab: dict[str, Any], points: np.ndarray, series: bool, attrs: dict[str, Any],
                  name: str) -> None:  # fmt: skip
    nc = require("netCDF4", "NetCDF files")
    with nc.Dataset(path, "w") as f:
        f.createDimension("point", points.shape[0])
        f.createDimension("component", len(lab["components"]))
        f.createDimension("time", len(lab["times"]))
        for i, axis in enumerate("xyz"):
            f.createVariable(axis, "f8", ("point",))[:] = points[:, i]
        f.createVariable("time", "f8", ("time",))[:] = lab["times"]
        comp = f.createVariable("component", str, ("component",))
        for i, c in enumerate(lab["components"]):
            comp[i] = c
        dims = ("time", "point", "component") if series else ("point", "component")
        var = f.createVariable(name, lab["values"].dtype.str[1:], dims)  # "f8": no byte-order mark
        var[:] = lab["values"]
        var.coordinates = "x y z"
        f.setncatts({k: str(v) for k, v in attrs.items()})
