"""Reading a 128^3 x 3 region: stock ``xr.open_zarr`` over HTTP vs the cutout endpoint vs a local zarr read.

Builds a 128^3 x 3 float32 periodic dataset (inner chunks 32^3, one 128^3 shard per time; the helper of
benchmarks/interpolation.py) in ``--data`` (reused afterwards), serves it with ``labservice serve`` in its
own process (as deployed; ``--in-process`` runs uvicorn in a thread of this process instead, so client and
server share one interpreter and one GIL) and prints MB/s, best of ``--repeat`` warm runs, for:

1. ``xr.open_zarr(<zarr view>)`` + ``.values`` with its default ``chunks={}`` (dask, one task per inner
   chunk, each fetching the shard index and its chunk; also with 16 dask threads instead of one per core)
   and with ``chunks="auto"`` (one task per shard);
2. ``xr.open_dataset(..., engine="labservice")`` without dask (one zarr read: the whole shard in one GET);
3. the cutout endpoint, ``format=npy`` streamed, and ``format=msgpack`` decoded by labclient;
4. the ceilings, measured in the same run (``ceilings.py``): a raw zarr read of the region, the loopback
   socket pair, memcpy; and as peers, stock ``xr.open_zarr`` of the same store on local disk (the same
   xarray, dask and zarr work with no HTTP in the way).

Every figure is printed with its ratio to the raw zarr read; the zarr-view reads also with the HTTP
requests per read, the bytes per request and the server's CPU per request (from ``zarr-stats`` and the
server process's CPU time). The load average is printed before and after.

    .venv/bin/python benchmarks/xarray_access.py [--size 128] [--repeat 5] [--data DIR] [--in-process]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from ceilings import line, load, measure, raw_zarr_read
from common import build

TARGETS = (
    ("default", "xr.open_zarr(http), default chunks", 0.3),
    ("'auto'", "xr.open_zarr(http, chunks='auto')", 0.6),
)


def best_round_robin(runs: dict[str, Callable[[], Any]], repeat: int, want: np.ndarray) -> dict[str, float]:
    """Seconds of the fastest of ``repeat`` runs of each, after one checked warm-up. The runs take turns
    (one of each per round), so a change in the machine's load falls on all of them alike."""
    for fn in runs.values():
        assert np.array_equal(np.asarray(fn()).reshape(want.shape), want)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            got = fn()
            times[name].append(time.perf_counter() - t0)
            assert np.asarray(got).size == want.size
    return {name: min(ts) for name, ts in times.items()}


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="grid size n of the n^3 x 3 region")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path("/tmp/labservice-xarray-bench"))
    parser.add_argument("--in-process", action="store_true", help="uvicorn in a thread of this process")
    args = parser.parse_args()

    import dask
    import psutil
    import xarray as xr
    import zarr

    from labclient import Lab
    from labservice.app import create_app
    from labservice.devserver import ServeProcess, ServerThread
    from labservice.limits import Limits
    from labservice.settings import Settings
    from labservice.tokens import TokenStore

    print(load())
    n = args.size
    path = args.data / f"bench{n}.zarr"
    build(path, n)
    tokens = TokenStore(args.data / "tokens.sqlite")
    _, token = tokens.create(
        "xarray-bench",
        Limits(points_per_request=1 << 20, max_cutout_bytes=1 << 30, requests_per_minute=10**6,
               max_concurrent=64, bytes_per_minute=1 << 40, zarr_max_concurrent=64,
               zarr_requests_per_minute=10**7),
    )
    ceil = measure(256 << 20)
    raw_rate, want = raw_zarr_read(str(path / "velocity"), (0,), repeat=args.repeat)
    mb = want.nbytes / 1e6
    auth = {"Authorization": f"Bearer {token}"}

    if args.in_process:
        settings = Settings(
            datasets={"bench": str(path)}, token_db=args.data / "tokens.sqlite", cache_bytes=1 << 30
        )
        server: Any = ServerThread(create_app(settings)).start()
        server_proc = None
    else:
        env = {
            "LABSERVICE_DATASETS": json.dumps({"bench": str(path)}),
            "LABSERVICE_TOKEN_DB": str(args.data / "tokens.sqlite"),
            "LABSERVICE_JOB_DB": str(args.data / "tokens.sqlite"),
            "LABSERVICE_CACHE_BYTES": str(1 << 30),
        }
        server = ServeProcess(None, env, args.data / "serve.log").__enter__()
        server.wait_ready()
        server_proc = psutil.Process(server.pid)
    try:
        with httpx.Client(timeout=600, headers=auth) as http:
            base = server.url
            view = f"{base}/api/v1/datasets/bench/zarr/"
            hostport = base.removeprefix("http://")
            opts = {"client_kwargs": {"headers": auth}}
            stock = xr.open_zarr(view, storage_options=opts)
            auto = xr.open_zarr(view, storage_options=opts, chunks="auto")
            engine = xr.open_dataset(f"labservice://{hostport}/bench", engine="labservice", token=token)
            local_default = xr.open_zarr(str(path), consolidated=False)
            local_auto = xr.open_zarr(str(path), consolidated=False, chunks="auto")
            lab = Lab(base, token=token)
            remote = lab.dataset("bench")
            region = {"x": f"0:{n}", "y": f"0:{n}", "z": f"0:{n}", "variable": "velocity", "time": "0.0"}

            def cutout_npy() -> np.ndarray:
                r = http.get(f"{base}/api/v1/datasets/bench/cutout", params={**region, "format": "npy"})
                r.raise_for_status()
                return np.load(io.BytesIO(r.content))

            def many_threads(ds: xr.Dataset) -> np.ndarray:
                # default chunks wait on one round trip after another; more dask threads overlap them
                with dask.config.set(num_workers=16):
                    return ds["velocity"].isel(time=0).values

            def stats() -> dict[str, int]:
                r = http.get(f"{base}/api/v1/datasets/bench/zarr-stats")
                r.raise_for_status()
                return r.json()

            runs: dict[str, Callable[[], Any]] = {
                "xr.open_zarr(http), default chunks": lambda: stock["velocity"].isel(time=0).values,
                "xr.open_zarr(http), default, 16 dask threads": lambda: many_threads(stock),
                "xr.open_zarr(http, chunks='auto')": lambda: auto["velocity"].isel(time=0).values,
                "engine=labservice, no dask": lambda: engine["velocity"].isel(time=0).values,
                "cutout endpoint, npy": cutout_npy,
                "cutout endpoint, msgpack (labclient)": lambda: remote.cutout(
                    "velocity", 0.0, (0, n), (0, n), (0, n), as_numpy=True)["data"],
                "peer: xr.open_zarr(local disk), default": lambda: local_default["velocity"].isel(t=0).values,
                "peer: xr.open_zarr(local disk), 'auto'": lambda: local_auto["velocity"].isel(t=0).values,
            }
            raw = zarr.open_array(str(path / "velocity"), mode="r")
            runs["raw zarr read, round robin"] = lambda: raw[0]
            seconds = best_round_robin(runs, args.repeat, want)
            per_read = {}
            for name, fn in runs.items():  # what one read costs: requests, bytes, CPU (3 reads each)
                if "http" not in name and "engine" not in name:
                    continue
                s0, c0, k0 = stats(), server_proc.cpu_times() if server_proc else None, cpu_self()
                for _ in range(3):
                    fn()
                k1, s1 = cpu_self(), stats()
                cpu = None
                if c0 is not None:
                    c1 = server_proc.cpu_times()
                    cpu = (c1.user + c1.system - c0.user - c0.system) / 3
                counts = ("requests", "data_requests", "data_bytes")
                per_read[name] = tuple((s1[k] - s0[k]) / 3 for k in counts)
                per_read[name] += (cpu, (k1 - k0) / 3)
            lab.close()
    finally:
        server.stop()

    where = "a thread of this process" if args.in_process else f"its own process (pid {server.pid})"
    print(f"\nreading {n}^3 x 3 float32 ({mb:.1f} MB), best of {args.repeat} warm runs; server in {where}; "
          f"{os.cpu_count()} cores")
    print("ceilings, same run:")
    print(line("loopback TCP socket pair", ceil["socket"]))
    print(line("memcpy (numpy copyto)", ceil["memcpy"]))
    raw_rate = max(raw_rate, want.nbytes / seconds.pop("raw zarr read, round robin"))
    print(line("raw zarr read (zarr.open_array()[0])", raw_rate, ceil["socket"], "socket"))
    print("figures, as a ratio to the raw zarr read (the faster of ceilings.raw_zarr_read and round robin):")
    for name, s in seconds.items():
        print(line(name, want.nbytes / s, raw_rate, "raw zarr"))
    print("the targets of issue 24, against the same call on local disk and the client's own CPU:")
    for peer, name, target in TARGETS:
        ratio = seconds[f"peer: xr.open_zarr(local disk), {peer}"] / seconds[name]
        allowed = want.nbytes / (target * raw_rate)
        client = per_read[name][4]
        print(f"  {name}: target {target} of raw = {allowed * 1e3:.0f} ms per read; now "
              f"{seconds[name] * 1e3:.0f} ms, {ratio:4.2f} of the same call on local disk; client CPU alone "
              f"{client * 1e3:.0f} ms" + (" (client and server)" if args.in_process else ""))
    print("zarr view, per read: HTTP requests (data requests), bytes per data request, server, client CPU:")
    for name, (req, data, nbytes, cpu, client) in per_read.items():
        srv = f"server cpu {cpu * 1e3:6.1f} ms ({cpu / req * 1e3:.2f} ms/request)" if cpu is not None else ""
        print(f"  {name:36s} {req:6.1f} ({data:5.1f}) {nbytes / max(data, 1) / 1e3:9.1f} kB  {srv}  "
              f"client cpu {client * 1e3:6.1f} ms")
    print(load())


if __name__ == "__main__":
    main()
