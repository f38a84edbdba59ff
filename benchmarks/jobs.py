"""Batch cutout jobs against a raw sequential zarr read of the same region, with where the time goes.

Builds (once, cached) an N^3 x 3 float32 synthetic dataset (default N = 512: 1.5 GB), then prints, all
measured in this run:
- the ceilings: memcpy (``ceilings.memcpy_bandwidth``) and the raw sequential read of the whole volume
  through the zarr back end (best of 3);
- a cutout job of the same volume (zarr output) with 1 worker and with 2 workers (best of ``--repeat``;
  both clusters stay up and the jobs alternate, so a change in the machine's load falls on both), MB/s,
  and the ratios job/raw read (target >= 0.70) and 2 workers/1 worker (target >= 1.6);
- where a job's time goes: CPU seconds per part (``time.process_time`` around ``run_part``, on the
  worker), the serial part of the job (submit to the first part, the last part to the end: planning,
  finalize, bookkeeping) and, from the measured serial fraction, Amdahl's projection for 2 and 4 workers
  on as many free cores (a projection, not a measurement);
- the peak RSS of a worker process, against the task size and the cutout size; the load average.

Run: ``.venv/bin/python benchmarks/jobs.py [--n 256] [--data /tmp/labservice-bench] [--scratch /dev/shm]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ceilings import load, memcpy_bandwidth

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


def raw_read(url: Path, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds to read the whole volume sequentially, slab by slab, from the zarr store."""
    store = open_store(str(url))
    t0, c0 = time.perf_counter(), time.process_time()
    total = 0
    for z0 in range(0, n, 64):
        total += store.read_box("velocity", 0, slice(z0, min(n, z0 + 64)), slice(0, n), slice(0, n)).nbytes
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    store.close()
    assert total == n**3 * 12
    return dt, cpu


def worker_peak_rss(client) -> dict[str, int]:
    """Peak RSS of each worker process from /proc (VmHWM; ru_maxrss would include the parent's at fork)."""

    def peak() -> int:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    return client.run(peak)


def timed(fn, log: str):
    """``fn`` that appends its (wall, CPU) seconds to ``log`` (shipped by value: it lives in __main__)."""

    def run(*args):
        t0, c0 = time.perf_counter(), time.process_time()
        record = fn(*args)
        with open(log, "a") as f:
            f.write(json.dumps([time.perf_counter() - t0, time.process_time() - c0]) + "\n")
        return record

    return run


@dataclass
class JobRun:
    """One timed job: total seconds and where they went (seconds, from Dask's task stream)."""

    seconds: float
    before_parts: float  # submit (check, insert) + claim + plan + graph to the scheduler + first start
    parts_span: float  # first part start to last part end
    after_parts: float  # last part end to done: finalize, manifest, clean-up, the registry's finish
    finalize: float  # the finalize task alone
    finalize_cpu: float
    part_wall: list[float] = field(default_factory=list)
    part_cpu: list[float] = field(default_factory=list)

    @property
    def serial(self) -> float:
        return self.before_parts + self.after_parts


def start_engine(url: Path, n: int, workers: int, root: Path) -> JobEngine:
    """An engine with its own LocalCluster of ``workers`` processes, warmed up by one small job."""
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
    engine.client.wait_for_workers(workers, timeout=120)
    # Warm up outside the timing (imports, opening the dataset on each worker), as in a running service.
    box = {"x": [0, shard], "y": [0, shard], "z": [0, shard]}
    warm = engine.submit("bench", request(url) | box)
    assert engine.wait(warm.id, timeout=600).status == "done"
    engine.cancel("bench", warm.id)
    return engine


def request(url: Path) -> dict:
    return {"kind": "cutout", "dataset": str(url), "variables": ["velocity"], "time_indices": [0]}


def run_job(engine: JobEngine, url: Path, fmt: str, log: Path, final_log: Path) -> JobRun:
    """One whole-volume cutout job, timed, with where its time went; its output is deleted after."""
    from distributed import get_task_stream

    log.unlink(missing_ok=True)
    final_log.unlink(missing_ok=True)
    with get_task_stream(client=engine.client) as stream:
        t0, w0 = time.perf_counter(), time.time()
        rec = engine.submit("bench", request(url) | {"formats": [fmt]})
        rec = engine.wait(rec.id, timeout=3600, poll=0.01)
        dt, w1 = time.perf_counter() - t0, time.time()
    assert rec.status == "done", rec.error
    engine.cancel("bench", rec.id)
    spans = {d["key"]: [(s["start"], s["stop"]) for s in d["startstops"] if s["action"] == "compute"]
             for d in stream.data}  # fmt: skip
    part_spans = [s for k, v in spans.items() if not k.endswith("-final") for s in v]
    fin = [s for k, v in spans.items() if k.endswith("-final") for s in v]
    first, last = min(s[0] for s in part_spans), max(s[1] for s in part_spans)
    timings = [json.loads(x) for x in log.read_text().splitlines()]
    fin_cpu = sum(json.loads(x)[1] for x in final_log.read_text().splitlines())
    return JobRun(dt, first - w0, last - first, w1 - last, sum(b - a for a, b in fin), fin_cpu,
                  [t[0] for t in timings], [t[1] for t in timings])  # fmt: skip


def run_jobs(url: Path, n: int, root: Path, repeat: int, fmt: str) -> dict[int, tuple[list[JobRun], int]]:
    """For 1 and 2 workers: ``repeat`` timed jobs and the peak worker RSS. Both clusters stay up and the
    jobs alternate (1, 2, 1, 2, ...), so the machine's changing load falls on both alike."""
    from labservice.jobs.kinds import KINDS

    kind = KINDS["cutout"]
    log, final_log = root / "parts.jsonl", root / "final.jsonl"
    plain, plain_final = type(kind).run_part, type(kind).finalize
    kind.run_part = timed(plain, str(log))  # type: ignore[method-assign]
    kind.finalize = timed(plain_final, str(final_log))  # type: ignore[method-assign]
    engines: dict[int, JobEngine] = {}
    try:
        for w in (1, 2):
            engines[w] = start_engine(url, n, w, root)
        runs: dict[int, list[JobRun]] = {1: [], 2: []}
        for _ in range(repeat):
            for w, engine in engines.items():
                runs[w].append(run_job(engine, url, fmt, log, final_log))
        return {w: (runs[w], max(worker_peak_rss(e.client).values())) for w, e in engines.items()}
    finally:
        for engine in engines.values():
            engine.stop()
        kind.run_part, kind.finalize = plain, plain_final  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="grid size (512 gives the 1.5 GB cutout)")
    parser.add_argument("--repeat", type=int, default=3, help="timed jobs per worker count (the best counts)")
    parser.add_argument(
        "--format", default="zarr", help="the job's output format (hdf5 and netcdf are made from zarr)"
    )
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "labservice-bench")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="where job outputs go (default: a folder under --data; /dev/shm takes the disk out of the figure)",
    )
    args = parser.parse_args()
    print(load())
    url = args.data / f"jobs{args.n}.zarr"
    t0 = time.perf_counter()
    build(url, args.n)
    nbytes = args.n**3 * 12
    print(f"dataset {url} ({nbytes / MB:.0f} MB) ready in {time.perf_counter() - t0:.1f} s")
    memcpy = memcpy_bandwidth(min(nbytes, 256 << 20))
    raws = [raw_read(url, args.n) for _ in range(3)]
    raw, raw_cpu = min(raws)
    raw_rate = nbytes / MB / raw
    print(f"memcpy (ceiling)          : {memcpy / MB:8.1f} MB/s")
    print(f"raw sequential zarr read  : {raw:7.2f} s  {raw_rate:8.1f} MB/s  CPU {raw_cpu:.2f} s  "
          f"({raw_rate * MB / memcpy:.3f} of memcpy)")  # fmt: skip
    scratch_parent = args.scratch or args.data
    scratch_parent.mkdir(parents=True, exist_ok=True)
    print(f"job outputs under {scratch_parent}")
    with tempfile.TemporaryDirectory(dir=scratch_parent) as tmp:
        all_runs = run_jobs(url, args.n, Path(tmp), args.repeat, args.format)
    task = min(128, args.n) ** 3 * 12
    results = {w: (min(runs, key=lambda r: r.seconds), rss) for w, (runs, rss) in all_runs.items()}
    for w, (r, rss) in results.items():
        rate = nbytes / MB / r.seconds
        print(
            f"{args.format} cutout job, {w} worker{'s' if w > 1 else ' '}: {r.seconds:7.2f} s  {rate:8.1f} MB/s  "
            f"({rate / raw_rate:.2f} x raw read; target >= 0.70)  worker peak RSS {rss / MB:.0f} MB "
            f"(task {task / MB:.0f} MB, cutout {nbytes / MB:.0f} MB)"
        )
        cpu, wall = sum(r.part_cpu), sum(r.part_wall)
        print(
            f"    {len(r.part_cpu)} parts: CPU {cpu:.3f} s in all, {statistics.mean(r.part_cpu) * 1e3:.1f} ms "
            f"per part ({nbytes / MB / cpu:.0f} MB per CPU second, {raw_cpu / cpu:.2f} of the raw read's "
            f"{nbytes / MB / raw_cpu:.0f}), "
            f"wall {wall:.3f} s in all; the workers got {cpu / r.parts_span:.2f} cores while the parts ran"
        )
        print(
            f"    before the first part {r.before_parts:.3f} s, parts {r.parts_span:.3f} s, after the last part "
            f"{r.after_parts:.3f} s (finalize task {r.finalize:.3f} s, CPU {r.finalize_cpu:.3f} s): serial {r.serial:.3f} s = "
            f"{r.serial / r.seconds:.2f} of the job"
        )
    one, two = results[1][0], results[2][0]
    speedup = one.seconds / two.seconds
    paired = [a.seconds / b.seconds for a, b in zip(all_runs[1][0], all_runs[2][0], strict=True)]
    print(f"2 workers / 1 worker      : {speedup:.2f} x best against best, {statistics.median(paired):.2f} x the "
          f"median of the {len(paired)} back-to-back pairs (target >= 1.6)")  # fmt: skip
    f = one.serial / one.seconds
    amdahl = {k: 1 / (f + (1 - f) / k) for k in (2, 4)}
    print(
        f"Amdahl from the 1-worker serial fraction {f:.2f}: projected {amdahl[2]:.2f} x on 2 free cores, "
        f"{amdahl[4]:.2f} x on 4 (a projection, not a measurement); the 2-worker parts took "
        f"{sum(two.part_cpu) / sum(one.part_cpu):.2f} x the CPU of the 1-worker parts"
    )
    print(load())


if __name__ == "__main__":
    main()
