"""Load: many concurrent clients with a realistic mix, on 127.0.0.1, bounded in time.

Each client is one asyncio task with its own token (as separate users are): it loops over point queries,
small cutouts (wrapping), metadata and halo searches; two clients also submit a small points job now and
then and poll it. Reported: throughput, p50/p99 per operation, errors (anything but 2xx and quota 429s),
and the server's RSS over time (it must stay flat: the chunk cache is bounded). The peer of the run is the
same mix at 1 client: the ratio says how well throughput scales with concurrency on this machine.

The server runs as a separate process (``labservice serve``), as in production, unless ``--url`` is given.
Usage::

    python benchmarks/load.py [--clients 50] [--duration 120] [--quick]   # --quick: 10 clients x 10 s

slice.png before and after: unless ``--no-slice-ab``, a first server runs the same load with the
matplotlib renderer (``LABSERVICE_QUICKLOOK_RENDERER=matplotlib``, the old one); the main run uses the
fast one. Both figures are printed side by side, with each renderer's cost for one image with no load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np

MIB = 1 << 20
TWO_PI = 2 * np.pi
# Operation -> weight of the mix (jobs are separate: a few, from two clients).
MIX = {"points": 40, "cutout": 15, "metadata": 20, "halos": 15, "sql": 2, "slice": 3, "health": 5}


@dataclass
class Record:
    """What the clients saw: latencies per operation and status counts."""

    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    status: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    errors: list[str] = field(default_factory=list)

    def add(self, op: str, seconds: float, status: int, detail: str = "") -> None:
        self.latency[op].append(seconds)
        self.status[op][status] += 1
        if not (200 <= status < 300 or status == 429) and len(self.errors) < 20:
            self.errors.append(f"{op} -> {status}: {detail[:200]}")


def _points_body(rng: random.Random, n: int) -> bytes:
    pts = np.random.default_rng(rng.getrandbits(32)).uniform(0, TWO_PI, (n, 3))
    body = {
        "variable": "velocity",
        "points": {"dtype": "float64", "shape": [n, 3], "data": pts.tobytes()},
        "time": round(rng.uniform(6.0, 9.15), 4),
        "spatial": "lag4",
        "temporal": "pchip",
    }
    return msgpack.packb(body, use_bin_type=True)


def _request(op: str, rng: random.Random, scrub: bool = False) -> tuple[str, str, dict[str, Any]]:
    """method, path, httpx keyword arguments of one operation of the mix."""
    if op == "points":
        body = _points_body(rng, rng.choice([100, 500, 2000]))
        headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
        return "POST", "/datasets/isotropic64/points", {"content": body, "headers": headers}
    if op == "cutout":
        x0, y0, z0 = (rng.randrange(-8, 64) for _ in range(3))
        params = {"variable": "velocity", "time": 6.0 + 0.05 * rng.randrange(64), "format": "npy",
                  "x": f"{x0}:{x0 + 16}", "y": f"{y0}:{y0 + 16}", "z": f"{z0}:{z0 + 16}"}  # fmt: skip
        return "GET", "/datasets/isotropic64/cutout", {"params": params}
    if op == "metadata":
        return "GET", rng.choice(["/datasets", "/datasets/isotropic64", "/datasets/channel64"]), {}
    if op == "halos":
        params = {"mass__gt": rng.choice([1e12, 1e13, 5e13]), "order_by": "-mass", "limit": 20}
        if rng.random() < 0.5:
            params["near"] = ",".join(f"{rng.uniform(0, 100):.2f}" for _ in range(3)) + ",15"
        return "GET", f"/datasets/cosmo64/snapshots/{rng.randrange(20, 31)}/halos", {"params": params}
    if op == "sql":
        sql = "select id, mass from halos where snap = 30 order by mass desc limit 10"
        return "POST", "/datasets/cosmo64/sql", {"json": {"sql": sql}}
    if op == "slice":
        params = {"variable": "pressure", "time": 6.0}
        if scrub:  # as the portal's slider does: a new plane (so a new title and colour limits) each time
            params["index"] = rng.randrange(64)
        return "GET", "/datasets/isotropic64/slice.png", {"params": params}
    return "GET", "/health", {}


async def _client(
    http: httpx.AsyncClient, token: str, seed: int, deadline: float, rec: Record, jobs: bool, scrub: bool
) -> None:
    rng = random.Random(seed)
    ops, weights = list(MIX), list(MIX.values())
    auth = {"Authorization": f"Bearer {token}"}
    next_job = time.monotonic() + rng.uniform(0, 5) if jobs else float("inf")
    job_id: str | None = None
    while time.monotonic() < deadline:
        if time.monotonic() >= next_job:
            job_id = await _job_step(http, auth, rng, rec, job_id)
            next_job = time.monotonic() + (1.0 if job_id else 10.0)
        op = rng.choices(ops, weights)[0]
        method, path, kw = _request(op, rng, scrub)
        kw["headers"] = {**kw.get("headers", {}), **auth}
        t0 = time.perf_counter()
        try:
            r = await http.request(method, "/api/v1" + path, **kw)
            content = await r.aread()
            rec.add(op, time.perf_counter() - t0, r.status_code, content[:300].decode(errors="replace"))
            if r.status_code == 429:
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
        except httpx.HTTPError as exc:
            rec.add(op, time.perf_counter() - t0, 599, repr(exc))


async def _job_step(
    http: httpx.AsyncClient, auth: dict[str, str], rng: random.Random, rec: Record, job_id: str | None
) -> str | None:
    """Submit a small points job, or poll the one running; returns the id still to poll."""
    t0 = time.perf_counter()
    if job_id is None:
        pts = np.random.default_rng(rng.getrandbits(32)).uniform(0, TWO_PI, (5000, 3)).tolist()
        body = {
            "kind": "points",
            "dataset": "isotropic64",
            "variable": "pressure",
            "time": 7.0,
            "points": pts,
        }
        r = await http.post("/api/v1/jobs", json=body, headers=auth)
        rec.add("job_submit", time.perf_counter() - t0, r.status_code, r.text)
        return r.json().get("id") if r.status_code == 202 else None
    r = await http.get(f"/api/v1/jobs/{job_id}", headers=auth)
    rec.add("job_poll", time.perf_counter() - t0, r.status_code, r.text)
    status = r.json().get("status") if r.status_code == 200 else "failed"
    if status in ("queued", "running"):
        return job_id
    rec.add(f"job_{status}", 0.0, 200 if status == "done" else 500, r.text)
    return None


def _rss_sampler(pid: int | None, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    import psutil

    proc = psutil.Process(pid or os.getpid())
    t0 = time.monotonic()
    while not stop.is_set():
        out.append((time.monotonic() - t0, proc.memory_info().rss / MIB))
        stop.wait(1.0)


async def _run_async(url: str, tokens: list[str], duration: float, seed: int, scrub: bool) -> Record:
    rec = Record()
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=len(tokens) + 4, max_keepalive_connections=len(tokens) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(
            *(_client(http, tok, seed + i, deadline, rec, i < 2, scrub) for i, tok in enumerate(tokens))
        )
    return rec


def run_load(
    url: str,
    tokens: list[str],
    duration: float,
    server_pid: int | None = None,
    seed: int = 0,
    scrub: bool = False,
) -> dict:
    """Run ``len(tokens)`` clients for ``duration`` seconds against ``url``; return the summary.
    ``scrub``: each slice.png asks for a random plane instead of always the first."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(server_pid, stop, samples), daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    rec = asyncio.run(_run_async(url, tokens, duration, seed, scrub))
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join(5)
    return summarize(rec, wall, samples, len(tokens))


def summarize(rec: Record, wall: float, rss: list[tuple[float, float]], clients: int) -> dict:
    ops = {}
    for op, lat in sorted(rec.latency.items()):
        a = np.asarray(lat)
        ops[op] = {
            "count": int(a.size),
            "p50_ms": round(float(np.percentile(a, 50)) * 1e3, 1),
            "p99_ms": round(float(np.percentile(a, 99)) * 1e3, 1),
            "statuses": {str(k): v for k, v in sorted(rec.status[op].items())},
        }
    total = sum(o["count"] for o in ops.values())
    errors = sum(n for op in rec.status.values() for s, n in op.items() if not (200 <= s < 300 or s == 429))
    mbs = [m for _, m in rss]
    fifth = max(1, len(mbs) // 5)
    quarter = max(1, len(mbs) // 4)
    return {
        "clients": clients,
        "wall_s": round(wall, 1),
        "requests": total,
        "throughput_rps": round(total / wall, 1),
        "errors": errors,
        "quota_429": sum(op.get(429, 0) for op in rec.status.values()),
        "error_samples": rec.errors,
        "operations": ops,
        "rss_mb": {
            "first": round(mbs[0], 1) if mbs else None,
            "max": round(max(mbs), 1) if mbs else None,
            "last": round(mbs[-1], 1) if mbs else None,
            # Growth between the first and the last fifth of the run (includes the caches filling up).
            "growth_last_vs_first_fifth": round(float(np.mean(mbs[-fifth:]) - np.mean(mbs[:fifth])), 1)
            if mbs
            else None,
            # Growth over the second half (last quarter vs third quarter): ~0 when memory has levelled off.
            "growth_second_half": round(
                float(np.mean(mbs[-quarter:]) - np.mean(mbs[-2 * quarter : -quarter])), 1
            )
            if len(mbs) >= 4
            else None,
            "samples": [(round(t, 1), round(m, 1)) for t, m in rss[:: max(1, len(rss) // 30)]],
        },
    }


def make_tokens(token_db: Path, n: int) -> list[str]:
    """One token per simulated user: 600 requests per minute, 4 at a time, small jobs."""
    from labservice.limits import Limits
    from labservice.tokens import TokenStore

    store = TokenStore(token_db)
    limits = Limits(points_per_request=20_000, max_cutout_bytes=16 * MIB, requests_per_minute=600,
                    max_concurrent=4, jobs_allowed=True, max_running_jobs=1, scratch_bytes=256 * MIB,
                    max_job_bytes=64 * MIB)  # fmt: skip
    return [store.create(f"load-{i}", limits)[1] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds")
    parser.add_argument("--quick", action="store_true", help="10 clients for 10 s")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LABSERVICE_DEMO_DATA", "data")))
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument(
        "--no-slice-ab", dest="slice_ab", action="store_false",
        help="skip the second server that runs the same load with the matplotlib slice renderer",
    )  # fmt: skip
    parser.add_argument(
        "--slice-scrub", action="store_true",
        help="each slice.png asks for a random z plane (new title and colour limits), as the portal's slider",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.clients, args.duration = 10, 10.0
    from ceilings import load

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokens = make_tokens(work / "tokens.sqlite", args.clients)
        env = {"LABSERVICE_TOKEN_DB": str(work / "tokens.sqlite"), "LABSERVICE_SCRATCH_URL": str(work / "scratch"),
               "LABSERVICE_JOB_DB": str(work / "tokens.sqlite"), "LABSERVICE_USER_STORE_URL": str(work / "mydb"),
               "LABSERVICE_CACHE_BYTES": str(256 * MIB)}  # fmt: skip (nothing of the server's in the data folder)
        before = None
        if args.slice_ab:  # "before": the same load on a server drawing slice.png with matplotlib
            old = {**env, "LABSERVICE_QUICKLOOK_RENDERER": "matplotlib"}
            before = _serve_and_load(args, tokens, work, old)
            before["load"] = load()
        fast = {**env, "LABSERVICE_QUICKLOOK_RENDERER": "fast"}
        result = _serve_and_load(args, tokens, work, fast, peer=True)
        result["load"] = load()
    _print(result)
    if before is not None:
        result["slice_ab"] = _slice_ab(before, result, args.slice_scrub)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def _serve_and_load(
    args: Any, tokens: list[str], work: Path, env: dict[str, str], peer: bool = False
) -> dict:
    """Start a server with ``env``, warm it, optionally run the 1-client peer, then the load."""
    from labservice.devserver import ServeProcess

    with ServeProcess(args.data.resolve(), env, work / "serve.log").wait_ready(180.0) as server:
        url = server.url
        load_before = os.getloadavg()
        run_load(url, tokens[:2], 5.0, server.pid, seed=98)  # compile kernels, fill imports, warm caches
        if peer:  # the same mix from one client, for the scaling ratio
            single = run_load(url, tokens[:1], min(10.0, args.duration), server.pid, seed=99)
        result = run_load(url, tokens, args.duration, server.pid, scrub=args.slice_scrub)
        if peer:
            result["single_client_rps"] = single["throughput_rps"]
            result["scaling_vs_one_client"] = round(
                result["throughput_rps"] / max(single["throughput_rps"], 1e-9), 2
            )
        result["loadavg_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return result


def _slice_ab(before: dict, after: dict, scrub: bool) -> dict:
    """Print slice.png under the same load with each renderer, and each renderer's cost in this process
    with no load (the floor a loaded request can approach)."""
    from ceilings import best, load

    from labservice.cutout.quicklook import render_slice_png

    x = np.linspace(0, TWO_PI, 64, endpoint=False)  # the benchmark's plane: 64 x 64, the default look
    plane = np.sin(x[None, :]) * np.cos(x[:, None])
    look = {"extent": (0, TWO_PI, 0, TWO_PI), "title": "isotropic64 pressure p, z = 0, t = 6", "units": ""}
    solo = {}
    for renderer in ("matplotlib", "fast"):
        render_slice_png(plane, **look, renderer=renderer)  # imports, frame cache
        solo[renderer] = best(lambda r=renderer: render_slice_png(plane, **look, renderer=r), 5) * 1e3
    frames = iter(range(1, 1000))  # the portal's scrubbing: each plane has a new title and new limits

    def next_plane() -> bytes:
        i = next(frames)
        return render_slice_png(plane * (1 + 1e-3 * i), **(look | {"title": f"z = {i}"}), renderer="fast")

    solo["fast, new title and limits"] = best(next_plane, 5) * 1e3
    out = {"solo_ms": {k: round(v, 1) for k, v in solo.items()}}
    planes = "a random z plane each" if scrub else "always the same plane"
    print(f"\nslice.png under the same load (same seed and mix; {planes}), before and after:")
    for name, r, renderer in (("before", before, "matplotlib"), ("after", after, "fast")):
        op = r["operations"].get("slice", {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan")})
        others = [o["p50_ms"] for k, o in r["operations"].items() if k in ("points", "cutout", "metadata")]
        out[name] = {"p50_ms": op["p50_ms"], "p99_ms": op["p99_ms"], "count": op["count"]}
        lo, hi = min(others, default=0), max(others, default=0)
        print(f"  {name:6s} {renderer:10s} p50 {op['p50_ms']:7.1f} ms  p99 {op['p99_ms']:7.1f} ms  "
              f"(n={op['count']}; points/cutout/metadata p50 {lo:.0f}-{hi:.0f} "
              f"ms; {r['requests']} requests, {r['throughput_rps']} req/s; {r['load']})")  # fmt: skip
    b, a = out["before"], out["after"]
    print(f"  after/before: p50 {a['p50_ms'] / b['p50_ms']:.3f}, p99 {a['p99_ms'] / b['p99_ms']:.3f}; "
          f"target p50 <= 100 ms: {'met' if a['p50_ms'] <= 100 else 'NOT met'}")  # fmt: skip
    fresh = solo["fast, new title and limits"]
    print(f"  one image in this process, no request running (best of 5): matplotlib {solo['matplotlib']:.1f} ms, "
          f"fast {solo['fast']:.1f} ms (x{solo['matplotlib'] / solo['fast']:.0f}), fast with a new title and "
          f"limits {fresh:.1f} ms (x{solo['matplotlib'] / fresh:.0f}); loaded p50 / alone: "
          f"before {b['p50_ms'] / solo['matplotlib']:.1f}, after {a['p50_ms'] / solo['fast']:.1f}; {load()}")  # fmt: skip
    return out


def _print(r: dict) -> None:
    print(f"{r['clients']} clients, {r['wall_s']} s: {r['requests']} requests, {r['throughput_rps']} req/s "
          f"(1 client: {r.get('single_client_rps')} req/s, x{r.get('scaling_vs_one_client')}); "
          f"errors {r['errors']}, quota 429s {r['quota_429']}; load average {r.get('loadavg_before_after')}")  # fmt: skip
    print(f"{'operation':<12} {'count':>7} {'p50 ms':>9} {'p99 ms':>9}  statuses")
    for op, o in r["operations"].items():
        print(f"{op:<12} {o['count']:>7} {o['p50_ms']:>9} {o['p99_ms']:>9}  {o['statuses']}")
    rss = r["rss_mb"]
    print(f"server RSS MB: first {rss['first']}, max {rss['max']}, last {rss['last']}, "
          f"growth last vs first fifth {rss['growth_last_vs_first_fifth']}, "
          f"over the second half {rss['growth_second_half']}")  # fmt: skip
    print("RSS samples (s, MB):", rss["samples"])
    for e in r["error_samples"]:
        print("error:", e)


if __name__ == "__main__":
    main()
