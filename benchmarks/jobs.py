"""Batch cutout jobs against a raw sequential zarr read of the same region.

Builds (once, cached) an N^3 x 3 float32 synthetic dataset (default N = 512: 1.5 GB), then prints:
- the raw sequential read of the whole volume through the zarr back end, MB/s;
- a cutout job of the same volume (zarr output) with 1 worker and with 2 workers, MB/s, and the ratios
  job/raw (target >= 0.70) and 2 workers/1 worker (target >= 1.6);
- the peak RSS of a worker process, against the task size and the cutout size.

Run: ``.venv/bin/python benchmarks/jobs.py [--n 512] [--data /tmp/labservice-bench]``. The machine's
other load shows in the figures; run it on a quiet machine for the targets.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from labservice.jobs import JobEngine
from labservice.storage import create_store, open_store
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable

MB = 1e6


def build(url: Path, n: int) -> DatasetMeta:
    """An n^3 periodic velocity field at one time, 64^3 chunks in 256^3 shards (or the grid)."""
    axis = Axis(size=n, periodic=True, start=0.0, step=2 * np.pi / n)
    shard = min(256, n)
    meta = DatasetMeta(
        id=f"bench{n}",
        title="jobs benchmark",
        grid=Grid(x=axis, y=axis, z=axis),
        times=[0.0],
        variables={"velocity": Variable(components=["ux", "uy", "uz"])},
        chunks=(64, 64, 64),
        shards=(shard, shard, shard),
    )
    if (url / "done").exists():
        return open_store(str(url)).meta
    shutil.rmtree(url, ignore_errors=True)
    store = create_store(str(url), meta, backend="zarr", overwrite=True)
    c = axis.coords().astype(np.float32)
    for z0 in range(0, n, 64):
        z = c[z0 : z0 + 64, None, None]
        block = np.empty((len(z), n, n, 3), np.float32)
        block[..., 0] = np.sin(c)[None, None, :] * np.cos(c)[None, :, None] + 0 * z
        block[..., 1] = np.cos(c)[None, :, None] + 0.5 * np.sin(z)
        block[..., 2] = np.sin(z) * np.cos(c)[None, None, :]
        store.write_box("velocity", 0, z0, 0, 0, block)
    store.close()
    (url / "done").write_text("ok")
    return meta


def raw_read(url: Path, n: int) -> float:
    """Seconds to read the whole volume sequentially, slab by slab, straight from the zarr store."""
    store = open_store(str(url))
    t0 = time.perf_counter()
    total = 0
    for z0 in range(0, n, 64):
        total += store.read_box("velocity", 0, slice(z0, min(n, z0 + 64)), slice(0, n), slice(0, n)).nbytes
    dt = time.perf_counter() - t0
    store.close()
    assert total == n**3 * 12
    return dt


def worker_peak_rss(client) -> dict[str, int]:
    """Peak RSS of each worker process from /proc (VmHWM; ru_maxrss would include the parent's at fork)."""

    def peak() -> int:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    return client.run(peak)


def run_job(url: Path, n: int, workers: int, root: Path) -> tuple[float, int, int]:
    """(seconds from submit to done, peak worker RSS, task bytes) of a whole-volume cutout job."""
    shard = min(128, n)
    engine = JobEngine(
        root / f"jobs{workers}.sqlite",
        str(root / f"scratch{workers}"),
        n_workers=workers,
        threads_per_worker=1,
        worker_memory="4GiB",
        shard_edge=shard,
        chunk_edge=64,
        task_bytes=shard**3 * 12,
    )
    engine.start()
    try:
        engine.client.wait_for_workers(workers, timeout=120)
        # Warm up outside the timing (imports, opening the dataset on each worker), as in a running service.
        warm = engine.submit(
            "bench",
            {
                "kind": "cutout",
                "dataset": str(url),
                "variables": ["velocity"],
                "time_indices": [0],
                "x": [0, shard],
                "y": [0, shard],
                "z": [0, shard],
            },
        )
        assert engine.wait(warm.id, timeout=600).status == "done"
        t0 = time.perf_counter()
        rec = engine.submit(
            "bench",
            {
                "kind": "cutout",
                "dataset": str(url),
                "variables": ["velocity"],
                "time_indices": [0],
                "formats": ["zarr"],
            },
        )
        rec = engine.wait(rec.id, timeout=3600, poll=0.05)
        dt = time.perf_counter() - t0
        assert rec.status == "done", rec.error
        rss = max(worker_peak_rss(engine.client).values())
        engine.cancel("bench", rec.id)  # delete the 1.5 GB output
    finally:
        engine.stop()
    return dt, rss, shard**3 * 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="grid size (512 gives the 1.5 GB cutout)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "labservice-bench")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="where job outputs go (default: a folder under --data; /dev/shm takes the disk out of the figure)",
    )
    args = parser.parse_args()
    url = args.data / f"jobs{args.n}.zarr"
    t0 = time.perf_counter()
    build(url, args.n)
    nbytes = args.n**3 * 12
    print(f"dataset {url} ({nbytes / MB:.0f} MB) ready in {time.perf_counter() - t0:.1f} s")
    raw = raw_read(url, args.n)
    raw_rate = nbytes / MB / raw
    print(f"raw sequential zarr read : {raw:7.2f} s  {raw_rate:8.1f} MB/s")
    scratch_parent = args.scratch or args.data
    scratch_parent.mkdir(parents=True, exist_ok=True)
    print(f"job outputs under {scratch_parent}")
    with tempfile.TemporaryDirectory(dir=scratch_parent) as tmp:
        results = {w: run_job(url, args.n, w, Path(tmp)) for w in (1, 2)}
    for w, (dt, rss, task) in results.items():
        rate = nbytes / MB / dt
        print(
            f"cutout job, {w} worker{'s' if w > 1 else ' '}  : {dt:7.2f} s  {rate:8.1f} MB/s  "
            f"({rate / raw_rate:.2f} x raw read; target >= 0.70)  worker peak RSS {rss / MB:.0f} MB "
            f"(task {task / MB:.0f} MB, cutout {nbytes / MB:.0f} MB)"
        )
    speedup = results[1][0] / results[2][0]
    print(f"2 workers / 1 worker     : {speedup:.2f} x (target >= 1.6)")


if __name__ == "__main__":
    main()
