"""Small synthetic datasets with known values, written through the real storage layer, and their axes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labservice.storage import ChunkCache, ChunkReader, create_store
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable

TWO_PI = 2 * np.pi


# -- axes ------------------------------------------------------------------------------------------------
def uniform_axis(n: int, periodic: bool = True, length: float = TWO_PI, start: float = 0.0) -> Axis:
    step = length / n if periodic else length / (n - 1)
    return Axis(size=n, periodic=periodic, start=start, step=step)


def stretched_axis(n: int) -> Axis:
    """A wall-bounded axis on [-1, 1] clustered at the walls (like a channel's y)."""
    s = np.linspace(-1, 1, n)
    return Axis(size=n, periodic=False, coordinates=list(np.sin(0.5 * np.pi * s) * 0.999 + 0.001 * s))


# -- a tiny random field on an awkward grid (cutout tests) ----------------------------------------------
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
class WrittenDataset:
    """A written store, the arrays written into it, and a fresh reader with its own cache."""

    meta: DatasetMeta
    arrays: dict[str, np.ndarray]  # variable -> [t, z, y, x, c]
    url: str

    def reader(self) -> ChunkReader:
        from labservice.storage import open_store

        return ChunkReader(open_store(self.url), cache=ChunkCache(1 << 26))


def write_random(url: str, meta: DatasetMeta, seed: int = 0) -> WrittenDataset:
    """Standard-normal float32 values for every variable and time of ``meta``."""
    rng = np.random.default_rng(seed)
    store = create_store(url, meta)
    arrays = {}
    for name, var in meta.variables.items():
        a = rng.standard_normal((len(meta.times), NZ, NY, NX, var.ncomp)).astype(np.float32)
        for t in range(len(meta.times)):
            store.write_box(name, t, 0, 0, 0, a[t])
        arrays[name] = a
    store.close()
    return WrittenDataset(meta, arrays, url)


# -- a periodic box with an analytic velocity (hardening, load) -----------------------------------------
def analytic_velocity(points: np.ndarray, t: float) -> np.ndarray:
    """The velocity :func:`build_box` writes: u = (sin y, sin z, sin x) * (1 + t)."""
    x, y, z = points.T
    return np.stack([np.sin(y), np.sin(z), np.sin(x)], axis=-1) * (1.0 + t)


def build_box(
    url: str, n: int, nt: int = 1, chunk: int = 32, shard: int = 64, storage_options: Any = None
) -> DatasetMeta:
    """A periodic n^3 box with the analytic velocity (3) at nt times."""
    axis = Axis(size=n, periodic=True, start=0.0, step=TWO_PI / n)
    meta = DatasetMeta(
        id=Path(url).name.removesuffix(".zarr"),
        title=f"hardening box {n}^3",
        grid=Grid(x=axis, y=axis, z=axis),
        times=[float(t) for t in range(nt)],
        variables={"velocity": Variable(components=["ux", "uy", "uz"], units="m/s")},
        chunks=(chunk, chunk, chunk),
        shards=(shard, shard, shard),
    )
    store = create_store(url, meta, backend="zarr", storage_options=storage_options, overwrite=True)
    c = axis.coords()
    for t in range(nt):
        for z0 in range(0, n, shard):
            z, y, x = np.meshgrid(c[z0 : z0 + shard], c, c, indexing="ij")
            u = np.stack([np.sin(y), np.sin(z), np.sin(x)], axis=-1) * (1.0 + t)
            store.write_box("velocity", t, z0, 0, 0, u.astype(np.float32))
    store.close()
    return meta
