"""Small real datasets (zarr and HDF5 via the storage layer) for cutout tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from labservice.storage import ChunkCache, ChunkReader, create_store
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable

NX, NY, NZ = 20, 12, 10
Z_COORDS = [float(v) for v in (np.arange(NZ) ** 1.5 - 3.0)]


def small_meta(dataset_id: str = "tiny") -> DatasetMeta:
    """x, y periodic and uniform; z non-periodic and stretched; chunks (8, 8, 4) don't divide the grid."""
    return DatasetMeta(
        id=dataset_id,
        title="tiny test field",
        grid=Grid(
            x=Axis(size=NX, periodic=True, start=0.0, step=0.25),
            y=Axis(size=NY, periodic=True, start=-1.0, step=0.5),
            z=Axis(size=NZ, coordinates=Z_COORDS),
        ),
        times=[0.0, 0.5, 1.0],
        variables={
            "velocity": Variable(components=["ux", "uy", "uz"], units="m/s"),
            "pressure": Variable(components=["p"], units="Pa"),
        },
        chunks=(8, 8, 4),
        shards=(16, 16, 8),
    )


@dataclass
class Dataset:
    """A written store, the arrays written into it, and a fresh reader with its own cache."""

    meta: DatasetMeta
    arrays: dict[str, np.ndarray]  # variable -> [t, z, y, x, c]
    url: str

    def reader(self) -> ChunkReader:
        from labservice.storage import open_store

        return ChunkReader(open_store(self.url), cache=ChunkCache(1 << 26))


def build(url: str, meta: DatasetMeta, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    store = create_store(url, meta)
    arrays = {}
    for name, var in meta.variables.items():
        a = rng.standard_normal((len(meta.times), NZ, NY, NX, var.ncomp)).astype(np.float32)
        for t in range(len(meta.times)):
            store.write_box(name, t, 0, 0, 0, a[t])
        arrays[name] = a
    store.close()
    return Dataset(meta, arrays, url)


@pytest.fixture(scope="session", params=["zarr", "hdf5"])
def dataset(request, tmp_path_factory) -> Dataset:
    suffix = ".h5" if request.param == "hdf5" else ".zarr"
    return build(str(tmp_path_factory.mktemp("cut") / f"tiny{suffix}"), small_meta())


@pytest.fixture(scope="session")
def zarr_dataset(tmp_path_factory) -> Dataset:
    return build(str(tmp_path_factory.mktemp("cutz") / "tiny.zarr"), small_meta(), seed=1)
