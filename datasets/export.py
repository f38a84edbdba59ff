"""File encodings of cosmology answers: CSV and Parquet tables, Gadget-style HDF5 and npz particle cutouts.

The web routes (``labservice.routers.cosmology``) and notebooks use the same functions; JSON and msgpack
bodies are the web layer's own encoders. Nothing here knows HTTP.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labservice.datasets.branch import write_branch_hdf5

if TYPE_CHECKING:
    from labservice.datasets.simulation import Simulation


# -- tables ----------------------------------------------------------------------------------------------
def table_columns(frame: pd.DataFrame) -> dict[str, Any]:
    """Column name -> values: numeric columns as arrays, others as lists with None for missing values."""
    out: dict[str, Any] = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        out[str(name)] = values if values.dtype.kind in "biuf" else [None if pd.isna(v) else v for v in values]
    return out


def table_csv(frame: pd.DataFrame) -> bytes:
    """The table as CSV with a header row and no index."""
    return frame.to_csv(index=False).encode()


def table_parquet(frame: pd.DataFrame, info: dict[str, Any] | None = None) -> bytes:
    """The table as Parquet; ``info`` (total, truncated, ...) goes in the schema metadata as ``labservice``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"labservice": json.dumps(info or {})})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# -- particle cutouts ----------------------------------------------------------------------------------
def _split(data: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-particle arrays and scalar fields of a cutout (the centre is a scalar-like triple)."""
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray) and k != "centre"}
    return arrays, {k: v for k, v in data.items() if k not in arrays}


def halo_cutout_npz(data: dict[str, Any]) -> bytes:
    """A halo cutout (:meth:`Simulation.cutout`) as an npz of its particle arrays plus ``centre``."""
    arrays, _ = _split(data)
    sink = io.BytesIO()
    np.savez(sink, **arrays, centre=data["centre"])
    return sink.getvalue()


def halo_cutout_hdf5(data: dict[str, Any], sim: Simulation) -> bytes:
    """A halo cutout as a Gadget-style HDF5 file: a ``Header`` group and the particles in ``PartType1``."""
    import h5py

    arrays, scalars = _split(data)
    snapshot = sim.info["snapshots"][data["snap"]]
    sink = io.BytesIO()
    with h5py.File(sink, "w") as f:
        header = f.create_group("Header")
        header.attrs["BoxSize"] = sim.box
        header.attrs["Redshift"] = float(snapshot["redshift"])
        header.attrs["Time"] = float(snapshot["a"])
        header.attrs["MassTable"] = np.array([0.0, sim.info["particle_mass"] / 1e10, 0, 0, 0, 0])
        header.attrs["NumPart_ThisFile"] = np.array([0, data["Offsets"].shape[0], 0, 0, 0, 0], dtype=np.int64)
        for k, v in scalars.items():
            header.attrs[k] = v
        part = f.create_group("PartType1")
        for k, v in arrays.items():
            part.create_dataset(k, data=v)
    return sink.getvalue()


def branch_cutout_hdf5(info: dict[str, Any], nodes: list[dict[str, Any]], sim: Simulation) -> bytes:
    """A branch cutout (one group per main-branch node) as HDF5 bytes; see :func:`write_branch_hdf5`."""
    sink = io.BytesIO()
    write_branch_hdf5(sink, info, sim.info, nodes)
    return sink.getvalue()
