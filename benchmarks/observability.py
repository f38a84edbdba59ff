"""The cost of /metrics and the access log: throughput with ``LABSERVICE_METRICS`` and
``LABSERVICE_ACCESS_LOG`` on and off, measured in the same run on two servers started side by side.

Two loads, each from ``--clients`` closed-loop clients for ``--duration`` seconds per round, the two servers
taking turns (on/off, then off/on, ...) so that drift in the machine's load hits both alike:

- ``points``: 4096-point lag6 msgpack requests (the service benchmark's latency load);
- ``meta``: ``GET /api/v1/datasets/<id>`` (sub-millisecond work: the worst case for a per-request cost).

A Prometheus scraper polls /metrics every second during the "on" runs. Prints requests/s, server CPU per
request and the on/off ratio (target: the "on" throughput within 3% of "off"). Usage::

    python benchmarks/observability.py [--clients 16] [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from labclient.codec import MSGPACK, pack
from labservice.devserver import ServeProcess, write_sample_datasets
from labservice.limits import Limits
from labservice.tokens import TokenStore

BIG = Limits(points_per_request=1 << 20, requests_per_minute=10_000_000, max_concurrent=1024)


def start(urls: dict[str, str], folder: Path, on: bool) -> ServeProcess:
    switch = "on" if on else "off"
    env = {
        "LABSERVICE_DATASETS": json.dumps(urls),
        "LABSERVICE_TOKEN_DB": str(folder / "tokens.sqlite"),
        "LABSERVICE_JOB_DB": str(folder / "tokens.sqlite"),  # nothing in the working directory
        "LABSERVICE_JOBS_ENABLED": "false",
        "LABSERVICE_METRICS": switch,
        "LABSERVICE_ACCESS_LOG": switch,
    }
    return ServeProcess(None, env, folder / f"server-{switch}.log").wait_ready(120.0)


def run_load(url: str, kind: str, token: str, clients: int, duration: float, scrape: bool) -> int:
    """Requests answered (200) in ``duration`` seconds."""
    rng = np.random.default_rng(1)
    headers = {"Authorization": f"Bearer {token}"}
    if kind == "points":
        path = "/api/v1/datasets/periodic64/points"
        headers |= {"Content-Type": MSGPACK, "Accept": MSGPACK}
        bodies = [pack({"variable": "velocity", "time": 0.1, "spatial": "lag6",
                        "points": rng.uniform(0, 2 * np.pi, (4096, 3))}) for _ in range(clients)]
    else:
        path, bodies = "/api/v1/datasets/periodic64", [None] * clients
    done = [0] * clients
    stop = time.monotonic() + duration

    def client(i: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            while time.monotonic() < stop:
                r = http.post(path, content=bodies[i]) if bodies[i] is not None else http.get(path)
                done[i] += r.status_code == 200

    def scraper() -> None:
        while time.monotonic() < stop:
            httpx.get(url + "/metrics", timeout=30).raise_for_status()
            time.sleep(1.0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    if scrape:
        threads.append(threading.Thread(target=scraper))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, load average at start {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="lab-obs-bench-") as tmp:
        folder = Path(tmp)
        urls = write_sample_datasets(folder / "data", n=64)
        _, token = TokenStore(folder / "tokens.sqlite").create("bench", BIG)
        servers = {True: start(urls, folder, True), False: start(urls, folder, False)}
        try:
            for kind in ("points", "meta"):
                for s in servers.values():  # warm: kernels compiled, chunks cached, connections made
                    run_load(s.url, kind, token, args.clients, 2.0, False)
                rates: dict[bool, list[float]] = {True: [], False: []}
                cpu: dict[bool, list[float]] = {True: [], False: []}
                for r in range(args.rounds):
                    for on in ((True, False) if r % 2 == 0 else (False, True)):
                        proc = psutil.Process(servers[on].pid)
                        c0 = sum(proc.cpu_times()[:2])
                        n = run_load(servers[on].url, kind, token, args.clients, args.duration, on)
                        rates[on].append(n / args.duration)
                        cpu[on].append((sum(proc.cpu_times()[:2]) - c0) / max(n, 1) * 1e3)
                        print(f"  {kind:6s} round {r} metrics+log {'on ' if on else 'off'}: {n / args.duration:9.1f} "
                              f"req/s, server CPU {cpu[on][-1]:.3f} ms/request, load {os.getloadavg()[0]:.2f}")
                on_rate, off_rate = statistics.median(rates[True]), statistics.median(rates[False])
                print(f"{kind}: {args.clients} clients, median of {args.rounds} x {args.duration:g} s: on {on_rate:.1f} "
                      f"req/s, off {off_rate:.1f} req/s, on/off {on_rate / off_rate:.3f} "
                      f"(cost {100 * (1 - on_rate / off_rate):+.1f}%); server CPU on "
                      f"{statistics.median(cpu[True]):.3f} ms/request, off {statistics.median(cpu[False]):.3f}")
        finally:
            for s in servers.values():
                s.stop()
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
