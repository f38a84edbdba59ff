"""`labservice ingest` of a run of >= 1 GB, timed as the whole command (process start to exit).

The run is what a simulation code writes: one HDF5 file per time step holding the three velocity
components as separate contiguous float32 datasets ``/u``, ``/v``, ``/w`` in z, y, x order (the
descriptor's documented default layout). It is built once in ``--dir`` and reused.

Ceilings, measured in the same run:
- memcpy (``ceilings.memcpy_bandwidth``);
- a raw sequential read of the source files (warm, as the ingest reads them) plus a raw write of the same
  bytes to the same disk: the most any ingest that reads and writes every byte once can reach.

    python benchmarks/ingest.py [--n 256] [--steps 8] [--dir /tmp/labservice-ingest-bench] [--dask]

``--dask`` also times ``labservice ingest --dask ADDRESS`` against a running ``dask scheduler`` with 1 and
then 2 worker processes (the cluster start is not counted: a cluster is started once for many ingests).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ceilings import best, line, load, memcpy_bandwidth

BIN = Path(sys.executable).parent


def build(folder: Path, n: int, steps: int) -> list[Path]:
    """The source run: ``steps`` files of n^3 x 3 float32 (skipped when already there)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"snap_{t:04d}.h5" for t in range(steps)]
    rng = np.random.default_rng(0)
    for t, path in enumerate(files):
        if path.exists() and path.stat().st_size >= 3 * 4 * n**3:
            continue
        tmp = path.with_suffix(".tmp")
        with h5py.File(tmp, "w") as f:
            for name in "uvw":
                f.create_dataset(name, data=rng.random((n, n, n), dtype=np.float32) + t)
        tmp.rename(path)
    desc = folder / "run.yaml"
    desc.write_text(
        "id: bench_ingest\ntitle: ingest benchmark\n"
        f"grid: {{shape: [{n}, {n}, {n}], x: {{start: 0, step: 1}}, y: {{start: 0, step: 1}}, "
        "z: {start: 0, step: 1}, periodic: [true, true, true]}\n"
        f"times: {{start: 0.0, step: 1.0, count: {steps}}}\n"
        "variables:\n  velocity:\n    components: [ux, uy, uz]\n"
        "    source: {files: 'snap_{t:04d}.h5', datasets: [/u, /v, /w]}\n"
        "store: ./store\n"
    )
    return files


def raw_read(files: list[Path], buf: np.ndarray) -> int:
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while (got := f.readinto(memoryview(buf)[: buf.nbytes])) > 0:
                total += got
    return total


def raw_copy(files: list[Path], out: Path, buf: np.ndarray) -> int:
    """Read every source file and write its bytes to ``out`` (as an ingest must), one file at a time."""
    total = 0
    out.mkdir(exist_ok=True)
    for path in files:
        with open(path, "rb", buffering=0) as f, open(out / path.name, "wb", buffering=0) as g:
            while (got := f.readinto(memoryview(buf))) > 0:
                g.write(memoryview(buf)[:got])
                total += got
    shutil.rmtree(out)
    return total


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_ingest(desc: Path, extra: list[str], cpu: list[float] | None = None) -> float:
    """Seconds of the whole ``labservice ingest`` command, from process start to exit (its CPU seconds, user
    plus system, are appended to ``cpu``)."""
    shutil.rmtree(desc.parent / "store", ignore_errors=True)
    c0, t0 = children_cpu(), time.perf_counter()
    subprocess.run([str(BIN / "labservice"), "ingest", str(desc), "--overwrite", "--no-progress", *extra],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(children_cpu() - c0)
    return seconds


def cpu_of(fn: Callable[[], object]) -> float:
    """CPU seconds (user + system) of this process while ``fn`` runs."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    fn()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def check(desc: Path, files: list[Path]) -> None:
    """The ingested dataset holds the source values bit for bit (read back by stock zarr)."""
    import h5py
    import zarr

    arr = zarr.open_group(str(desc.parent / "store"), mode="r")["velocity"]
    for t in (0, len(files) - 1):
        got = arr[t]
        with h5py.File(files[t], "r") as f:
            for c, name in enumerate("uvw"):
                assert np.array_equal(got[..., c], f[name][...]), (t, name)


class Cluster:
    """``dask scheduler`` and worker processes on 127.0.0.1, one thread each."""

    def __init__(self, workdir: Path) -> None:
        from labservice.devserver import free_ports

        self.port = free_ports(1)[0]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.procs = [self._spawn(["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                   "--no-dashboard"])]

    def _spawn(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "dask"), *args], cwd=self.workdir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def workers(self, n: int) -> None:
        from distributed import Client

        while len(self.procs) - 1 < n:
            self.procs.append(self._spawn(["worker", self.address, "--nthreads", "1", "--no-nanny",
                                           "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "4GiB"]))
        with Client(self.address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=60)

    def cpu(self) -> float:
        """CPU seconds (user + system) used so far by the scheduler and the workers."""
        import psutil

        total = 0.0
        for p in self.procs:
            times = psutil.Process(p.pid).cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="grid points per axis")
    ap.add_argument("--steps", type=int, default=8, help="time steps (8 x 256^3 x 3 x 4 B = 1.6 GB)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/labservice-ingest-bench"))
    ap.add_argument("--repeat", type=int, default=2, help="ingest runs; the best is reported")
    ap.add_argument("--dask", action="store_true", help="also time --dask with 1 and 2 workers")
    args = ap.parse_args()

    files = build(args.dir, args.n, args.steps)
    desc = args.dir / "run.yaml"
    nbytes = 3 * 4 * args.n**3 * args.steps
    print(f"source run: {args.steps} files of {args.n}^3 x 3 float32, {nbytes / 1e9:.2f} GB, in {args.dir}")
    print(load())

    buf = np.empty(64 << 20, dtype=np.uint8)
    memcpy = memcpy_bandwidth()
    read = nbytes / best(lambda: raw_read(files, buf), 2)
    copy = nbytes / best(lambda: raw_copy(files, args.dir / "rawcopy", buf), 2)
    print(line("memcpy (numpy copyto)", memcpy))
    print(line("raw sequential read of the source files", read, memcpy, "memcpy"))
    print(line("raw read + write of the same bytes (copy)", copy, read, "raw read"))
    print(load())

    copy_cpu = cpu_of(lambda: raw_copy(files, args.dir / "rawcopy", buf))
    print(f"  CPU of the raw copy: {copy_cpu / nbytes * 1e9:.2f} CPU s per GB")
    print(load())

    for label, extra in (("1 thread", ["--threads", "1"]), ("2 threads (default)", [])):
        cpu: list[float] = []
        rate = nbytes / min(run_ingest(desc, extra, cpu) for _ in range(args.repeat))
        check(desc, files)
        print(line(f"labservice ingest, {label}", rate, copy, "raw copy"))
        used = min(cpu)
        print(f"  {'':44s} {used / nbytes * 1e9:9.2f} CPU s per GB ({used / copy_cpu:.1f}x the raw copy's);"
              f" target 300 MB/s: {rate / 300e6:.2f}")
        print(load())

    if args.dask:
        cluster = Cluster(args.dir)
        try:
            rates = {}
            for n in (1, 2):
                cluster.workers(n)
                run_ingest(desc, ["--dask", cluster.address])  # the workers load numba's cached kernels once
                cpu: list[float] = []
                c0 = cluster.cpu()
                rates[n] = nbytes / min(run_ingest(desc, ["--dask", cluster.address], cpu)
                                        for _ in range(args.repeat))
                used = (cluster.cpu() - c0 + sum(cpu)) / args.repeat
                check(desc, files)
                print(line(f"labservice ingest --dask, {n} worker(s)", rates[n], copy, "raw copy"))
                print(f"  {'':44s} {used / nbytes * 1e9:9.2f} CPU s per GB (client, scheduler and workers)")
            print(f"  2 workers vs 1: {rates[2] / rates[1]:.2f}x")
        finally:
            cluster.stop()
        print(load())
    shutil.rmtree(args.dir / "store", ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
