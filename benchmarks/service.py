"""Web service figures on loopback, with a warm cache, each next to its peer measured in the same run.

1. Points/s of one 1,000,000-point lag4 request: msgpack end to end (client encode, server, client
   decode) vs the in-process engine vs the JSON path. Targets: msgpack >= 50% of in-process and >= 10x JSON.
2. p50/p99 latency of 4096-point lag6 msgpack requests from 16 concurrent clients. Target: p99 < 50 ms.
3. Sync cutout throughput (MB/s) of a 128^3 x 3 HDF5 cutout vs a raw zarr read of the same region.

The server runs as a separate process (``labservice serve``), as in production. Usage::

    python benchmarks/service.py [--size 128] [--points 1000000] [--duration 30] [--clients 16 [2 ...]]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from common import best_of

from labclient import Lab
from labclient.codec import MSGPACK, pack, unpack
from labservice import open_dataset
from labservice.devserver import ServeProcess, write_sample_datasets
from labservice.limits import Limits
from labservice.tokens import TokenStore


def start_server(urls: dict[str, str], folder: Path) -> ServeProcess:
    env = {
        "LABSERVICE_DATASETS": json.dumps(urls),
        "LABSERVICE_TOKEN_DB": str(folder / "tokens.sqlite"),
        "LABSERVICE_MAX_BODY_BYTES": str(1 << 30),
        "LABSERVICE_SYNC_CUTOUT_BYTES": str(1 << 30),
        "LABSERVICE_CACHE_BYTES": str(2 << 30),
        "LABSERVICE_JOBS_ENABLED": "false",
    }
    return ServeProcess(None, env, folder / "server.log").wait_ready(120.0)


def bench_points(ds, lab: Lab, url: str, token: str, dataset_id: str, n: int, time_value: float) -> None:
    rng = np.random.default_rng(0)
    lo, hi = 0.0, 2 * np.pi
    pts = rng.uniform(lo, hi, size=(n, 3))
    remote = lab.dataset(dataset_id)
    # Warm up: compile kernels and fill both caches.
    ref = ds.points("velocity", pts, time=time_value, spatial="lag4")
    got = remote.points("velocity", pts, time=time_value, spatial="lag4")
    assert np.array_equal(ref, got), "msgpack answer differs from the in-process one"

    t_local = best_of(lambda: ds.points("velocity", pts, time=time_value, spatial="lag4"), 3)
    t_msgpack = best_of(lambda: remote.points("velocity", pts, time=time_value, spatial="lag4"), 3)

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = {"variable": "velocity", "time": time_value, "spatial": "lag4"}

    def json_round_trip() -> np.ndarray:
        payload = json.dumps({**body, "points": pts.tolist()})
        r = httpx.post(
            f"{url}/api/v1/datasets/{dataset_id}/points", content=payload, headers=headers, timeout=600
        )
        r.raise_for_status()
        return np.asarray(r.json()["values"])

    t_json = best_of(json_round_trip, 1)
    print(f"points, one {n:,}-point lag4 request (velocity, warm cache):")
    print(f"  in-process engine      {n / t_local:14,.0f} points/s  ({t_local:.3f} s)")
    print(f"  HTTP msgpack           {n / t_msgpack:14,.0f} points/s  ({t_msgpack:.3f} s)")
    print(f"  HTTP JSON              {n / t_json:14,.0f} points/s  ({t_json:.3f} s)")
    print(f"  msgpack / in-process   {t_local / t_msgpack:14.2f}   (target >= 0.50)")
    print(f"  msgpack / JSON         {t_json / t_msgpack:14.1f} x (target >= 10)")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_latency(
    url: str, token: str, dataset_id: str, clients: int, duration: float, time_value: float, server_pid: int
) -> None:
    rng = np.random.default_rng(1)
    bodies = [
        pack(
            {
                "variable": "velocity",
                "time": time_value,
                "spatial": "lag6",
                "points": rng.uniform(0, 2 * np.pi, (4096, 3)),
            }
        )
        for _ in range(clients)
    ]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": MSGPACK, "Accept": MSGPACK}
    path = f"/api/v1/datasets/{dataset_id}/points"
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    # One request first: compiles the lag6 kernels (if the numba cache is cold) before the clock starts.
    httpx.post(url + path, content=bodies[0], headers=headers, timeout=600).raise_for_status()
    stop = time.monotonic() + duration

    def worker(i: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            http.post(path, content=bodies[i])  # warm this connection and the stencils' chunks
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = http.post(path, content=bodies[i])
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    errors[i] += 1
                    continue
                unpack(r.content)
                latencies[i].append(dt)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    server0, client0 = _cpu_seconds(server_pid), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server_cpu, client_cpu = _cpu_seconds(server_pid) - server0, time.process_time() - client0
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1e3
    print(f"latency, 4096-point lag6 msgpack requests, {clients} concurrent clients for {duration:g} s:")
    print(
        f"  requests {lat.size}, errors {sum(errors)}, throughput {lat.size / duration:,.1f} req/s "
        f"= {lat.size * 4096 / duration:,.0f} points/s"
    )
    print(f"  p50 {np.percentile(lat, 50):8.1f} ms")
    print(f"  p99 {np.percentile(lat, 99):8.1f} ms   (target < 50 ms)")
    # Little's law: closed-loop clients wait at least clients x (CPU per request) / cores
    per_request = (server_cpu + client_cpu) / max(lat.size, 1)
    cores = os.cpu_count() or 1
    print(f"  CPU per request: server {server_cpu / max(lat.size, 1) * 1e3:.2f} ms + clients "
          f"{client_cpu / max(lat.size, 1) * 1e3:.2f} ms; with {cores} cores the mean latency of {clients} "
          f"closed-loop clients is at least {clients * per_request / cores * 1e3:.1f} ms")
    print(f"  load average now {os.getloadavg()[0]:.2f}")


def bench_cutout(url: str, token: str, dataset_id: str, zarr_url: str, size: int, time_value: float) -> None:
    import zarr

    params = {
        "variable": "velocity",
        "time": repr(time_value),
        "format": "hdf5",
        "x": f"0:{size}",
        "y": f"0:{size}",
        "z": f"0:{size}",
    }
    headers = {"Authorization": f"Bearer {token}"}
    nbytes = size**3 * 3 * 4

    def http_cutout() -> None:
        got = 0
        with httpx.stream(
            "GET", f"{url}/api/v1/datasets/{dataset_id}/cutout", params=params, headers=headers, timeout=600
        ) as r:
            r.raise_for_status()
            for piece in r.iter_bytes():
                got += len(piece)
        assert got > nbytes

    group = zarr.open_group(zarr_url, mode="r")
    meta_times = list(open_dataset(zarr_url).meta.times)
    t_index = meta_times.index(time_value)

    def raw_zarr() -> None:
        group["velocity"][t_index, :size, :size, :size, :]

    http_cutout()
    raw_zarr()
    t_http = best_of(http_cutout, 3)
    t_zarr = best_of(raw_zarr, 3)
    mb = nbytes / 1e6
    print(f"sync cutout {size}^3 x 3 float32 ({mb:.0f} MB):")
    print(f"  HTTP hdf5 (streamed)   {mb / t_http:10.1f} MB/s  ({t_http:.3f} s)")
    print(f"  raw zarr read          {mb / t_zarr:10.1f} MB/s  ({t_zarr:.3f} s)")
    print(f"  hdf5 over HTTP / raw   {t_zarr / t_http:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="grid size of the benchmark dataset")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of the latency run")
    parser.add_argument("--clients", type=int, nargs="+", default=[16],
                        help="concurrent clients of the latency run; several values run one after another")
    parser.add_argument("--skip", nargs="*", default=[], choices=["points", "latency", "cutout"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        urls = write_sample_datasets(folder, n=args.size)
        dataset_id = f"periodic{args.size}"
        urls = {dataset_id: urls[dataset_id]}
        print(f"wrote a {args.size}^3 sample dataset in {time.perf_counter() - t0:.1f} s; load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (shared machine: compare ratios)")
        store = TokenStore(folder / "tokens.sqlite")
        _, token = store.create(
            "bench",
            Limits(
                points_per_request=4_000_000,
                max_cutout_bytes=1 << 30,
                requests_per_minute=10**7,
                max_concurrent=64,
            ),
        )
        time_value = 0.1
        with start_server(urls, folder) as server:
            url = server.url
            ds = open_dataset(urls[dataset_id])
            with Lab(url, token=token) as lab:
                if "points" not in args.skip:
                    bench_points(ds, lab, url, token, dataset_id, args.points, time_value)
            if "latency" not in args.skip:
                for clients in args.clients:
                    bench_latency(url, token, dataset_id, clients, args.duration, time_value, server.pid)
            if "cutout" not in args.skip:
                bench_cutout(url, token, dataset_id, urls[dataset_id], args.size, time_value)

if __name__ == "__main__":
    main()
