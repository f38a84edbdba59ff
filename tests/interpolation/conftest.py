"""Interpolation tests: ``make_dataset`` writes small real zarr datasets with analytic fields (axes from
tests/plugin/grids.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from labservice.facade import Dataset
from labservice.storage import ChunkCache, ChunkReader, create_store
from labservice.storage.metadata import DatasetMeta, Grid, Variable


@pytest.fixture
def make_dataset(tmp_path):
    """make_dataset(grid_axes, fields={name: fn(X, Y, Z, t) -> (..., nc)}, times, chunks, dtype) -> Dataset."""
    counter = itertools.count()

    def build(axes, fields, times=(0.0,), chunks=(8, 8, 8), shards=None, dtype="float64", extra=None):
        ax, ay, az = axes
        grid = Grid(x=ax, y=ay, z=az)
        X, Y, Z = np.meshgrid(ax.coords(), ay.coords(), az.coords(), indexing="ij")
        X, Y, Z = (a.transpose(2, 1, 0) for a in (X, Y, Z))  # array order (z, y, x)
        samples = {name: np.asarray(fn(X, Y, Z, times[0])) for name, fn in fields.items()}
        variables = {
            name: Variable(components=[f"c{i}" for i in range(s.shape[-1])], dtype=dtype)
            for name, s in samples.items()
        }
        if shards is None:
            shards = tuple(2 * c for c in chunks)
        meta = DatasetMeta(id=f"t{next(counter)}", title="test", grid=grid, times=list(times),
                           variables=variables, chunks=chunks, shards=shards, extra=extra or {})
        store = create_store(str(tmp_path / f"{meta.id}.zarr"), meta)
        for name, fn in fields.items():
            for k, t in enumerate(times):
                store.write_box(name, k, 0, 0, 0, np.asarray(fn(X, Y, Z, t), dtype=dtype))
        return Dataset(store, ChunkReader(store, cache=ChunkCache(1 << 28)))

    return build
