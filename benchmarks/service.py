"""Web service figures on loopback, with a warm cache, each next to its peer measured in the same run.

1. Points/s of one 1,000,000-point lag4 request: msgpack end to end (client encode, server, client
   decode) vs the in-process engine vs the JSON path. Targets: msgpack >= 50% of in-process and >= 10x JSON.
2. p50/p99 latency and throughput of 4096-point lag6 msgpack requests from 16 concurrent clients, with 1
   and with N server processes (``--workers 1 2``; more than one worker shares its limits through a
   redis-server started here). Target: p99 < 50 ms; throughput scales with workers when cores are free.
3. Sync cutout throughput (MB/s) of a 128^3 x 3 cutout in npy, hdf5 and msgpack (through labclient), the
   client decoding included, vs a raw zarr read of the same region. Target: npy and hdf5 >= 0.6 of it.

The ceilings (loopback socket pair, memcpy, raw zarr read; ``ceilings.py``) are measured in the same run,
and each figure is printed as a ratio to its peer, with the bound the ceilings set.

The server runs as a separate process (``labservice serve``), as in production. Usage::

    python benchmarks/service.py [--size 128] [--points 1000000] [--duration 30] [--clients 16 [2 ...]]
                                 [--workers 1 [2 ...]] [--skip latency] [--repeat 5] [--json-points N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from ceilings import best, line, load, measure, raw_zarr_read

from labclient import Lab
from labclient.codec import MSGPACK, pack, unpack
from labclient.transport import read_body
from labservice import open_dataset
from labservice.devserver import RedisServer, ServeProcess, write_sample_datasets
from labservice.limits import Limits
from labservice.tokens import TokenStore


def start_server(urls: dict[str, str], folder: Path, workers: int = 1, redis_url: str | None = None) -> ServeProcess:
    env = {
        "LABSERVICE_DATASETS": json.dumps(urls),
        "LABSERVICE_TOKEN_DB": str(folder / "tokens.sqlite"),
        "LABSERVICE_JOB_DB": str(folder / "tokens.sqlite"),  # nothing in the working directory
        "LABSERVICE_MAX_BODY_BYTES": str(1 << 30),
        "LABSERVICE_SYNC_CUTOUT_BYTES": str(1 << 30),
        "LABSERVICE_CACHE_BYTES": str(2 << 30),
        "LABSERVICE_JOBS_ENABLED": "false",
    }
    if redis_url:
        env["LABSERVICE_REDIS_URL"] = redis_url
    return ServeProcess(None, env, folder / "server.log", workers=workers).wait_ready(120.0)


def bench_points(
    ds, lab: Lab, url: str, token: str, dataset_id: str, n: int, time_value: float, ceil: dict[str, float],
    json_points: int,
) -> None:
    rng = np.random.default_rng(0)
    lo, hi = 0.0, 2 * np.pi
    pts = rng.uniform(lo, hi, size=(n, 3))
    remote = lab.dataset(dataset_id)
    # Warm up: compile kernels and fill both caches.
    ref = ds.points("velocity", pts, time=time_value, spatial="lag4")
    got = remote.points("velocity", pts, time=time_value, spatial="lag4", progress=False)
    assert np.array_equal(ref, got), "msgpack answer differs from the in-process one"

    # Interleaved rounds, best of each: the machine is shared, so both see the same load.
    t_local = t_msgpack = float("inf")
    for _ in range(3):
        t_local = min(t_local, best(lambda: ds.points("velocity", pts, time=time_value, spatial="lag4"), 1))
        t_msgpack = min(t_msgpack, best(
            lambda: remote.points("velocity", pts, time=time_value, spatial="lag4", progress=False), 1
        ))

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = {"variable": "velocity", "time": time_value, "spatial": "lag4"}
    few = pts[:json_points]

    def json_round_trip() -> np.ndarray:
        payload = json.dumps({**body, "points": few.tolist()})
        r = httpx.post(
            f"{url}/api/v1/datasets/{dataset_id}/points", content=payload, headers=headers, timeout=600
        )
        r.raise_for_status()
        return np.asarray(r.json()["values"])

    t_json = best(json_round_trip, 1) * n / len(few)  # per point, scaled to n
    # The least HTTP can add: the points (24 B each) go in and the values (12 B + 1 B flag) come back
    # through the socket once, and each side copies each byte once more (client encode, server read,
    # client read).
    wire = n * (24 + 12 * 2 + 1)
    floor = wire / ceil["socket"] + wire / ceil["memcpy"]
    print(f"points, one {n:,}-point lag4 request (velocity, warm cache):")
    print(f"  in-process engine      {n / t_local:14,.0f} points/s  ({t_local:.3f} s)")
    print(f"  HTTP msgpack           {n / t_msgpack:14,.0f} points/s  ({t_msgpack:.3f} s)")
    print(f"  HTTP JSON              {n / t_json:14,.0f} points/s  ({len(few):,} points, scaled)")
    print(f"  msgpack / in-process   {t_local / t_msgpack:14.2f}   (target >= 0.50)")
    print(f"  msgpack / JSON         {t_json / t_msgpack:14.1f} x (target >= 10)")
    print(f"  bound: {wire / 1e6:.0f} MB crossing the socket once + one copy each side = {floor * 1e3:.0f} ms "
          f"over in-process: at most {t_local / (t_local + floor):.2f} of in-process")
    print(f"  {load()}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children (the server's worker processes)."""
    import psutil

    total = 0.0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def bench_latency(
    url: str,
    token: str,
    dataset_id: str,
    clients: int,
    duration: float,
    time_value: float,
    server_pid: int,
    workers: int = 1,
) -> dict[str, float]:
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
    print(f"latency, 4096-point lag6 msgpack requests, {clients} concurrent clients for {duration:g} s, "
          f"{workers} server process{'es' if workers > 1 else ''}:")
    print(
        f"  requests {lat.size}, errors {sum(errors)}, throughput {lat.size / duration:,.1f} req/s "
        f"= {lat.size * 4096 / duration:,.0f} points/s"
    )
    print(f"  p50 {np.percentile(lat, 50):8.1f} ms")
    print(f"  p99 {np.percentile(lat, 99):8.1f} ms   (target < 50 ms)")
    # Little's law: closed-loop clients wait at least clients x (CPU per request) / cores
    per_request = (server_cpu + client_cpu) / max(lat.size, 1)
    cores = os.cpu_count() or 1
    floor = clients * per_request / cores
    print(f"  CPU per request: server {server_cpu / max(lat.size, 1) * 1e3:.2f} ms + clients "
          f"{client_cpu / max(lat.size, 1) * 1e3:.2f} ms; with {cores} cores the mean latency of {clients} "
          f"closed-loop clients is at least {floor * 1e3:.1f} ms (Little's law floor; measured mean "
          f"{lat.mean():.1f} ms), i.e. at most {cores / per_request:,.1f} req/s")
    server_cap = min(workers, cores) / max(server_cpu / max(lat.size, 1), 1e-9)
    print(f"  {workers} server process{'es serve' if workers > 1 else ' serves'} on {cores} cores at most "
          f"{server_cap:,.1f} req/s at this server CPU per request (one process uses at most one core)")
    print(f"  load average now {os.getloadavg()[0]:.2f}")
    return {"workers": workers, "clients": clients, "throughput": lat.size / duration,
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "floor_ms": floor * 1e3, "cap": cores / per_request, "load": os.getloadavg()[0]}


class BufferFile(io.RawIOBase):
    """A read-only file over a buffer, for h5py (io.BytesIO would copy a numpy buffer first)."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf, self.pos = memoryview(buf).cast("B"), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = (0, self.pos, len(self.buf))[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, out: Any) -> int:
        n = max(0, min(len(out), len(self.buf) - self.pos))
        out[:n] = self.buf[self.pos : self.pos + n]
        self.pos += n
        return n


def npy_from_buffer(buf: np.ndarray) -> np.ndarray:
    """np.load without its copy: parse the header, then a view of the data."""
    head = io.BytesIO(memoryview(buf)[:4096].tobytes())
    version = np.lib.format.read_magic(head)
    fmt = np.lib.format
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(head)
    assert not fortran
    return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape)), offset=head.tell()).reshape(shape)


def bench_cutout(
    url: str, token: str, dataset_id: str, zarr_url: str, size: int, time_value: float,
    ceil: dict[str, float], repeat: int,
) -> None:
    import h5py

    headers = {"Authorization": f"Bearer {token}"}
    region = {"x": f"0:{size}", "y": f"0:{size}", "z": f"0:{size}"}
    t_index = list(open_dataset(zarr_url).meta.times).index(time_value)
    index = (t_index, slice(0, size), slice(0, size), slice(0, size), slice(None))
    _, ref = raw_zarr_read(f"{zarr_url}/velocity", index, repeat=1)
    nbytes = ref.nbytes
    http = httpx.Client(base_url=url, headers=headers, timeout=600)
    path = f"/api/v1/datasets/{dataset_id}/cutout"

    def get(fmt: str) -> np.ndarray:
        """httpx streams the body into one buffer (labclient's reader)."""
        params = {"variable": "velocity", "time": repr(time_value), "format": fmt, **region}
        with http.stream("GET", path, params=params) as r:
            r.raise_for_status()
            buf = read_body(r)
            return np.frombuffer(r.read(), np.uint8) if buf is None else buf

    def npy() -> np.ndarray:
        return npy_from_buffer(get("npy"))

    def npy_load() -> np.ndarray:  # the plain way: .content and np.load
        params = {"variable": "velocity", "time": repr(time_value), "format": "npy", **region}
        return np.load(io.BytesIO(http.get(path, params=params).content))

    def hdf5() -> np.ndarray:
        with h5py.File(BufferFile(get("hdf5")), "r") as f:
            return f["velocity"][...]

    with Lab(url, token=token) as lab:
        remote = lab.dataset(dataset_id)

        def msgpack_lab() -> np.ndarray:
            box = (0, size)
            return remote.cutout("velocity", time_value, box, box, box, as_numpy=True)["data"]

        paths = {"npy (httpx into one buffer)": npy, "npy (httpx .content + np.load)": npy_load,
                 "hdf5 (httpx into one buffer + h5py)": hdf5, "msgpack (labclient cutout)": msgpack_lab}
        for name, fn in paths.items():
            assert np.array_equal(fn(), ref), f"{name} differs from the raw zarr read"
        times = dict.fromkeys(paths, float("inf"))
        raw = 0.0
        for _ in range(repeat):  # interleaved, so every path sees the same load
            raw = max(raw, raw_zarr_read(f"{zarr_url}/velocity", index, repeat=1)[0])
            for name, fn in paths.items():
                times[name] = min(times[name], best(fn, 1))
    http.close()
    # HDF5 has a floor of its own: the server writes the file and the client reads it with h5py, both
    # measured here in this process, warm.
    from labservice.cutout.formats import open_cutout
    from labservice.cutout.layout import layout_for
    from labservice.cutout.region import plan_cutout

    reader = open_dataset(zarr_url).reader
    layout = layout_for(reader, plan_cutout(reader.meta, "velocity", *region.values()), t_index)

    def write_hdf5() -> np.ndarray:
        body = open_cutout(reader, layout, "hdf5")
        body.close()  # the mapped file stays readable
        return np.frombuffer(body.first, np.uint8)

    image = write_hdf5()

    def read_hdf5() -> np.ndarray:
        with h5py.File(BufferFile(image), "r") as f:
            return f["velocity"][...]

    t_write, t_read = best(write_hdf5, repeat), best(read_hdf5, repeat)
    # The best any HTTP cutout can do: the bytes cross the socket once (the socket figure includes the
    # receiver's copy), the server copies them once out of its chunk cache into the region's order, and
    # the client's buffer is new memory each time (page faults: a copy into fresh memory, measured).
    flat = ref.reshape(-1).view(np.uint8)
    t_fresh = best(lambda: np.copyto(np.empty_like(flat), flat), repeat)
    t_floor = nbytes / ceil["socket"] + nbytes / ceil["memcpy"] + t_fresh
    bound = nbytes / t_floor
    hdf5_bound = nbytes / (nbytes / ceil["socket"] + t_fresh + t_write + t_read)  # the write reads the blocks
    print(f"sync cutout {size}^3 x 3 float32 ({nbytes / 1e6:.0f} MB), client decoding included, {load()}:")
    print(line("raw zarr read (local, the peer)", raw, ceil["socket"], "socket"))
    for name, t in times.items():
        print(line(f"HTTP {name}", nbytes / t, raw, "raw zarr read"))
    print(line(f"bound: socket once + a server copy + {t_fresh * 1e3:.0f} ms fresh client buffer", bound, raw,
               "raw zarr read"))
    name = f"hdf5 bound: + write {t_write * 1e3:.0f} ms + h5py read {t_read * 1e3:.0f} ms"
    print(line(name, hdf5_bound, raw, "raw zarr read"))
    t_h5 = times["hdf5 (httpx into one buffer + h5py)"]
    print(f"  hdf5 over HTTP {t_h5 * 1e3:.0f} ms = server write {t_write * 1e3:.0f} ms + h5py read "
          f"{t_read * 1e3:.0f} ms + {(t_h5 - t_write - t_read) * 1e3:.0f} ms for the rest (request, socket, "
          f"httpx receiving into a new buffer; the socket alone takes {nbytes / ceil['socket'] * 1e3:.0f} ms)")
    print("  targets: npy and hdf5 >= 0.60 of the raw zarr read")


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
    parser.add_argument("--json-points", type=int, default=100_000,
                        help="points of the JSON request (its rate is scaled to --points)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds of the cutout figures")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="server processes of the latency run, e.g. 1 2; more than 1 starts a redis-server "
                        "for the shared limits (LABSERVICE_REDIS_URL); points and cutout run with the first")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        t0 = time.perf_counter()
        urls = write_sample_datasets(folder, n=args.size)
        dataset_id = f"periodic{args.size}"
        urls = {dataset_id: urls[dataset_id]}
        print(f"wrote a {args.size}^3 sample dataset in {time.perf_counter() - t0:.1f} s; {load()} on "
              f"{os.cpu_count()} cores (shared machine: compare ratios)")
        ceil = measure(256 << 20)
        print("ceilings, this run:")
        print(line("loopback TCP socket pair", ceil["socket"]))
        print(line("memcpy (numpy copyto)", ceil["memcpy"]))
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
        redis_url = None
        if max(args.workers) > 1:
            (folder / "redis").mkdir()
            redis_url = stack.enter_context(RedisServer(folder / "redis")).url
        time_value = 0.1
        results = []
        for n, workers in enumerate(args.workers):
            with start_server(urls, folder, workers, redis_url if workers > 1 else None) as server:
                url = server.url
                if n == 0 and "points" not in args.skip:
                    ds = open_dataset(urls[dataset_id])
                    with Lab(url, token=token) as lab:
                        bench_points(ds, lab, url, token, dataset_id, args.points, time_value, ceil,
                                     args.json_points)
                if "latency" not in args.skip:
                    for clients in args.clients:
                        results.append(bench_latency(
                            url, token, dataset_id, clients, args.duration, time_value, server.pid, workers
                        ))
                if n == 0 and "cutout" not in args.skip:
                    bench_cutout(url, token, dataset_id, urls[dataset_id], args.size, time_value, ceil,
                                 args.repeat)
        if len(args.workers) > 1 and results:
            print("workers  clients  req/s     p50 ms   p99 ms   floor ms  CPU-bound req/s  load")
            for r in results:
                print(f"{r['workers']:7d}  {r['clients']:7d}  {r['throughput']:8.1f}  {r['p50']:7.1f}  "
                      f"{r['p99']:7.1f}  {r['floor_ms']:8.1f}  {r['cap']:15.1f}  {r['load']:.2f}")
            base = results[0]["throughput"]
            for r in results[1:]:
                print(f"  throughput {r['workers']} workers / {results[0]['workers']}: {r['throughput'] / base:.2f} x")


if __name__ == "__main__":
    main()
