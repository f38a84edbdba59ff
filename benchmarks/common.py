"""Helpers the benchmark scripts share; they import it by name (``python benchmarks/x.py`` puts this
folder first on the path). Running it does nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Seconds of the fastest of ``repeat`` calls (the machine is shared: the best call is the least disturbed)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def build(path: Path, n: int) -> None:
    """The interpolation benchmark's dataset ``bench``: a periodic n^3 box, a smooth velocity plus 1% noise."""
    from labservice.storage import create_store
    from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable

    if (path / "zarr.json").exists():
        return
    ax = Axis(size=n, periodic=True, start=0.0, step=2 * np.pi / n)
    meta = DatasetMeta(id="bench", title="bench", grid=Grid(x=ax, y=ax, z=ax), times=[0.0],
                       variables={"velocity": Variable(components=["ux", "uy", "uz"])},
                       chunks=(32, 32, 32), shards=(128, 128, 128))
    store = create_store(str(path), meta, overwrite=True)
    c = ax.coords()
    rng = np.random.default_rng(0)
    for z0 in range(0, n, 32):  # slab by slab, bounded memory
        Z, Y, X = np.meshgrid(c[z0 : z0 + 32], c, c, indexing="ij")
        u = np.stack([np.sin(X) * np.cos(Y) * np.cos(Z), -np.cos(X) * np.sin(Y) * np.cos(Z),
                      0.1 * np.sin(2 * X + Z)], -1)
        u += 0.01 * rng.standard_normal(u.shape)
        store.write_box("velocity", 0, z0, 0, 0, u.astype(np.float32))
