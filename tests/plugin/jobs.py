"""The batch-job tests' helpers: a synthetic dataset with an analytic field, an engine with small parts."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from labservice.storage import create_store
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable

TWO_PI = 2 * np.pi


def field_value(x: np.ndarray, y: np.ndarray, z: np.ndarray, t: float) -> np.ndarray:
    """velocity(x, y, z, t) on broadcast (z, y, x) coordinates: (..., 3) float32."""
    u = np.sin(x + t) * np.cos(y) + 0.0 * z
    v = np.cos(y - t) + 0.5 * np.sin(z) + 0.0 * x
    w = np.sin(z) * np.cos(x) + 0.1 * t + 0.0 * y
    return np.stack(np.broadcast_arrays(u, v, w), axis=-1).astype(np.float32)


def pressure_value(x: np.ndarray, y: np.ndarray, z: np.ndarray, t: float) -> np.ndarray:
    p = np.cos(x) * np.sin(y + t) * np.cos(z) + 0.0 * (x + y + z)
    return p[..., None].astype(np.float32)


def build(
    url: str, n: int = 64, nt: int = 3, chunk: int = 16, shard: int = 32, storage_options=None
) -> DatasetMeta:
    """Create a periodic n^3 dataset (box 2*pi) with velocity(3) and pressure(1) at nt times."""
    step = TWO_PI / n
    axis = Axis(size=n, periodic=True, start=0.0, step=step)
    meta = DatasetMeta(
        id="synthetic",
        title="synthetic analytic field",
        grid=Grid(x=axis, y=axis, z=axis),
        times=[0.1 * i for i in range(nt)],
        variables={
            "velocity": Variable(components=["ux", "uy", "uz"]),
            "pressure": Variable(components=["p"]),
        },
        chunks=(chunk, chunk, chunk),
        shards=(shard, shard, shard),
    )
    store = create_store(url, meta, backend="zarr", storage_options=storage_options, overwrite=True)
    c = axis.coords()
    for ti, t in enumerate(meta.times):
        for z0 in range(0, n, shard):
            z, y, x = np.meshgrid(c[z0 : z0 + shard], c, c, indexing="ij")
            store.write_box("velocity", ti, z0, 0, 0, field_value(x, y, z, t))
            store.write_box("pressure", ti, z0, 0, 0, pressure_value(x, y, z, t))
    store.close()
    return meta


def make_engine(root: Path, **kw):
    """An engine with small shards, so small cutouts still split into many tasks."""
    from labservice.jobs import JobEngine

    opts = dict(shard_edge=16, chunk_edge=8, task_bytes=16 * 16 * 16 * 3 * 4, points_per_task=2000)
    opts.update(kw)
    registry = opts.pop("registry", root / "jobs.sqlite")
    scratch = opts.pop("scratch", str(root / "scratch"))
    return JobEngine(registry, scratch, **opts)


def wait_progress(engine, job_id: str, minimum: int = 1, timeout: float = 60.0):
    """Poll the registry until the job has at least ``minimum`` finished units (or is final)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = engine.registry.get(job_id)
        if rec is not None and (rec.done >= minimum or rec.status in ("done", "failed", "cancelled")):
            return rec
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} made no progress in {timeout} s")



ENGINE_PROC = "tests.plugin.engine_proc"  # run with ``python -m`` from the repository root (REPO)
