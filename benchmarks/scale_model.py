"""The petabyte plan in numbers (docs/SCALING.md): per-node figures measured here, scaled by a written-down model.

Measured here (one process, in-process queries through the real reader and chunk cache; the benchmark
dataset of ``common.build``):
  * points/s: lag4 velocity at random points, warm cache, and cold (chunks read from disk);
  * MB/s: cutouts (float32 velocity), warm cache and cold;
  * a recorded query mix (hot regions chosen by a Zipf law: point batches in blobs, cutouts, a few uniform
    batches): every chunk lookup is recorded, then replayed through an LRU of each size for the hit rate
    against cache size, and through N caches routed two ways (round robin / by Morton range of the shard key).
Then the model (assumptions printed, all options) gives, for the dataset size and users asked: nodes needed,
aggregate points/s and MB/s, hit rate against cache size, and what S3, PostgreSQL and Redis must sustain.
``--cluster FILE`` reads the cluster test's measurements (format in docs/SCALING.md) and says where they and
the model disagree.

    .venv/bin/python benchmarks/scale_model.py --quick [--cluster cluster.json] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, build  # noqa: E402

MB = 1e6
GIB = 1 << 30


@dataclass
class Assumptions:
    """Every number the model takes that was not measured here. Change any with --set name=value."""

    dataset_pb: float = 1.0  # stored bytes, PB (10^15)
    users: int = 1000  # concurrent users
    think_seconds: float = 2.0  # each user sends one request, waits for it, then thinks this long
    mix_points: float = 0.6  # share of requests that are point batches ...
    mix_cutout: float = 0.3  # ... cutouts ...
    mix_zarr: float = 0.1  # ... zarr chunk reads (byte-charged)
    points_per_batch: int = 10_000
    cutout_mb: float = 32.0  # 128^3 float32 x 4 components
    zarr_mb: float = 2.0  # one chunk read by a zarr client
    hot_fraction: float = 0.01  # the part of the data the mix touches within a cache lifetime (hours)
    node_cores: int = 32
    node_cache_gib: float = 256.0  # RAM given to the chunk cache per node (cache_bytes x workers)
    node_nic_gbit: float = 25.0
    core_efficiency: float = 0.7  # per-core rate kept when going from this machine's cores to node_cores
    http_efficiency: float = 0.5  # share of in-process rate left after HTTP, encoding and limits
    target_hit_rate: float = 0.9
    max_hit_rate: float = 0.98  # the replay is a steady state; the hot set drifts, so some misses always stay
    s3_chunk_mb: float = 2.0  # object (shard chunk) size on S3
    workers_per_node: int = 8
    engines: int = 4
    engine_poll_seconds: float = 0.5
    running_jobs: int = 200
    lease_seconds: float = 10.0
    job_share: float = 0.01  # share of requests that submit or poll a job
    token_cache_seconds: float = 0.5  # labservice/tokens.py CACHE_SECONDS
    redis_ops_per_request: float = 2.0  # admit (one Lua script) + leave; +1 (charge) for zarr reads


# -- measurement ----------------------------------------------------------------------------------------


class RecordingCache:
    """A ChunkCache that also records every key looked up (the trace replayed for other cache sizes)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.trace, self.sizes = inner, [], {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # Only storage chunks are recorded: (token, variable, t, i, j, k). Derived entries (the interpolation's
    # padded blocks) are kept by the inner cache as the service keeps them, but read no storage.
    def get(self, key: Any) -> Any:
        if _is_chunk(key):
            self.trace.append(key)
        return self.inner.get(key)

    def get_many(self, keys: Any) -> Any:
        self.trace.extend(k for k in keys if _is_chunk(k))
        return self.inner.get_many(keys)

    def put(self, key: Any, value: Any) -> None:
        if _is_chunk(key):
            self.sizes[key] = value.nbytes
        self.inner.put(key, value)


def _is_chunk(key: Any) -> bool:
    return isinstance(key, tuple) and len(key) == 6 and all(isinstance(v, int) for v in key[-3:])


def query_mix(n: int, count: int, seed: int = 0) -> list[tuple[str, Any]]:
    """The recorded mix: ('points', array) or ('cutout', (x, y, z)) requests around Zipf-popular centres."""
    rng = np.random.default_rng(seed)
    L = 2 * np.pi
    centres = rng.uniform(0, L, (64, 3))
    popularity = 1.0 / np.arange(1, 65) ** 1.1
    popularity /= popularity.sum()
    out: list[tuple[str, Any]] = []
    for _ in range(count):
        r = rng.random()
        c = centres[rng.choice(64, p=popularity)]
        if r < 0.6:
            out.append(("points", np.mod(c + rng.normal(0, 0.25, (2000, 3)), L)))
        elif r < 0.9:
            lo = (c / L * n).astype(int) % n
            e = max(n // 6, 8)
            out.append(("cutout", tuple((int(a), int(min(a + e, n)), 1) for a in lo)))
        else:
            out.append(("points", rng.uniform(0, L, (500, 3))))
    return out


def measure(data: Path, quick: bool) -> dict[str, Any]:
    from labservice import open_dataset
    from labservice.storage.reader import ChunkCache

    n = 256
    path = data / f"bench{n}"
    build(path, n)
    dataset_bytes = n**3 * 3 * 4
    cache = ChunkCache(4 * dataset_bytes)
    ds = open_dataset(str(path), cache=cache)
    rng = np.random.default_rng(1)
    npts = 200_000 if quick else 1_000_000
    pts = rng.uniform(0, 2 * np.pi, (npts, 3))
    ds.points("velocity", pts[:1000], spatial="lag4")  # compile
    cache.clear()
    t0 = time.perf_counter()
    ds.points("velocity", pts, spatial="lag4")
    cold_pts = npts / (time.perf_counter() - t0)
    warm_pts = npts / best_of(lambda: ds.points("velocity", pts, spatial="lag4"))
    e = n // 2
    box = dict(x=(0, e, 1), y=(0, e, 1), z=(0, e, 1))
    nbytes = ds.cutout("velocity", **box).data.nbytes
    cache.clear()
    t0 = time.perf_counter()
    ds.cutout("velocity", **box)
    cold_mb = nbytes / MB / (time.perf_counter() - t0)
    warm_mb = nbytes / MB / best_of(lambda: ds.cutout("velocity", **box))

    # The recorded mix: run it once through a recording cache, keep each request's chunk lookups.
    rec = RecordingCache(ChunkCache(4 * dataset_bytes))
    ds = open_dataset(str(path), cache=rec)
    requests, touched_points, touched_cutout, n_points, n_cutout_bytes = [], 0, 0, 0, 0
    t0 = time.perf_counter()
    for kind, q in query_mix(n, 150 if quick else 400):
        start = len(rec.trace)
        if kind == "points":
            ds.points("velocity", q, spatial="lag4")
            n_points += len(q)
        else:
            n_cutout_bytes += ds.cutout("velocity", x=q[0], y=q[1], z=q[2]).data.nbytes
        keys = rec.trace[start:]
        requests.append(keys)
        chunk = sum(rec.sizes.get(k, 0) for k in set(keys))
        if kind == "points":
            touched_points += chunk
        else:
            touched_cutout += chunk
    mix_seconds = time.perf_counter() - t0
    chunk_bytes = int(np.median(list(rec.sizes.values())))
    distinct = {k for r in requests for k in r}
    return {
        "machine_cores": os.cpu_count() or 1,
        "grid": n,
        "dataset_bytes": dataset_bytes,
        "chunk_bytes": chunk_bytes,
        "points_per_second_warm": warm_pts,
        "points_per_second_cold": cold_pts,
        "cutout_mb_per_second_warm": warm_mb,
        "cutout_mb_per_second_cold": cold_mb,
        "mix_requests": len(requests),
        "mix_seconds": mix_seconds,
        "working_set_bytes": len(distinct) * chunk_bytes,
        "chunk_bytes_per_point": touched_points / max(n_points, 1),
        "chunk_bytes_per_cutout_byte": touched_cutout / max(n_cutout_bytes, 1),
        "requests": requests,  # dropped from the JSON output
    }


# -- cache replay -----------------------------------------------------------------------------------------


def lru_hits(requests: list[list[Any]], capacity: int) -> float:
    """Hit rate of one LRU holding ``capacity`` chunks over the recorded lookups (first pass warms it)."""
    cache: OrderedDict[Any, None] = OrderedDict()
    hits = total = 0
    for rnd in range(2):  # pass 1 warms, pass 2 counts: a steady state, not a cold start
        for keys in requests:
            for k in keys:
                if k in cache:
                    cache.move_to_end(k)
                    hits += rnd
                else:
                    cache[k] = None
                    if len(cache) > capacity:
                        cache.popitem(last=False)
                total += rnd
    return hits / max(total, 1)


def routed_hits(requests: list[list[Any]], nodes: int, capacity: int, routed: bool, per_axis: int,
                seed: int = 0) -> float:
    """Hit rate over ``nodes`` caches of ``capacity`` chunks each. Round robin: a whole request goes to any
    node. Routed: the balancer splits a request by Morton range (a point batch is already sorted by Morton
    key; a cutout is split into its shards) and sends each part to the node owning that range, so every
    chunk is cached on one node only."""
    per: list[list[list[Any]]] = [[] for _ in range(nodes)]
    rr = random.Random(seed)
    for keys in requests:
        if not routed:
            per[rr.randrange(nodes)].append(keys)
            continue
        parts: dict[int, list[Any]] = {}
        for k in keys:
            parts.setdefault(shard_of(k, nodes, per_axis), []).append(k)
        for node, part in parts.items():
            per[node].append(part)
    hits = sum(lru_hits(p, capacity) * sum(map(len, p)) for p in per if p)
    return hits / max(sum(map(len, requests)), 1)


def shard_of(key: Any, nodes: int, per_axis: int) -> int:
    """The node owning a chunk: the Morton code of its index (the reader's cache key ends in the chunk's
    3-d index), in one of ``nodes`` equal ranges of the code space."""
    from labservice.storage.morton import encode3

    i0, i1, i2 = (int(v) for v in key[-3:])
    code = int(encode3(i2, i1, i0))
    space = 1 << 3 * max(1, math.ceil(math.log2(per_axis)))
    return min(code * nodes // space, nodes - 1)


def cache_curve(m: dict[str, Any]) -> list[tuple[float, float]]:
    """(cache / working set, hit rate) measured by replay."""
    ws_chunks = m["working_set_bytes"] // m["chunk_bytes"]
    out = []
    for frac in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0):
        out.append((frac, lru_hits(m["requests"], max(1, int(ws_chunks * frac)))))
    return out


def hit_at(curve: list[tuple[float, float]], ratio: float) -> float:
    """Hit rate at cache/working-set ``ratio``, interpolated on the measured curve (log-ratio), capped at 1."""
    xs = [math.log(x) for x, _ in curve]
    ys = [y for _, y in curve]
    if ratio >= curve[-1][0]:
        return ys[-1]
    if ratio <= curve[0][0]:
        return ys[0] * ratio / curve[0][0]
    return float(np.interp(math.log(ratio), xs, ys))


# -- the model ------------------------------------------------------------------------------------------------


def model(m: dict[str, Any], a: Assumptions, curve: list[tuple[float, float]]) -> dict[str, Any]:
    req_s = a.users / a.think_seconds  # closed loop; latency is small next to the think time
    demand_points = req_s * a.mix_points * a.points_per_batch
    demand_mb = req_s * (a.mix_cutout * a.cutout_mb + a.mix_zarr * a.zarr_mb)
    scale = a.node_cores / m["machine_cores"] * a.core_efficiency * a.http_efficiency
    node_points = m["points_per_second_warm"] * scale
    node_mb = min(m["cutout_mb_per_second_warm"] * scale, a.node_nic_gbit * 1e9 / 8 / MB)
    nodes_compute = math.ceil(demand_points / node_points + demand_mb / node_mb)  # a node's time is shared
    hot = a.dataset_pb * 1e15 * a.hot_fraction
    node_cache = a.node_cache_gib * GIB
    nodes_cache = math.ceil(hot * _ratio_for(curve, a.target_hit_rate) / node_cache)
    nodes = max(nodes_compute, nodes_cache, 2)
    hit_routed = min(hit_at(curve, nodes * node_cache / hot), a.max_hit_rate)
    hit_rr = min(hit_at(curve, node_cache / hot), a.max_hit_rate)  # every node caches the same hot set
    touched_mb = (demand_points * m["chunk_bytes_per_point"] / MB + demand_mb * m["chunk_bytes_per_cutout_byte"])
    db_qps = (min(req_s, a.users * nodes * a.workers_per_node / a.token_cache_seconds)
              + req_s * a.job_share * 3 + a.engines / a.engine_poll_seconds
              + a.running_jobs / (a.lease_seconds / 4))  # fmt: skip
    return {
        "requests_per_second": req_s,
        "demand_points_per_second": demand_points,
        "demand_mb_per_second": demand_mb,
        "node_points_per_second": node_points,
        "node_mb_per_second": node_mb,
        "nodes_for_throughput": nodes_compute,
        "nodes_for_cache": nodes_cache,
        "nodes": nodes,
        "aggregate_points_per_second": nodes * node_points,
        "aggregate_mb_per_second": nodes * node_mb,
        "hot_set_tb": hot / 1e12,
        "hit_rate_routed": hit_routed,
        "hit_rate_round_robin": hit_rr,
        "s3_mb_per_second_routed": touched_mb * (1 - hit_routed),
        "s3_mb_per_second_round_robin": touched_mb * (1 - hit_rr),
        "s3_gets_per_second_routed": touched_mb * (1 - hit_routed) / a.s3_chunk_mb,
        "db_queries_per_second": db_qps,
        "redis_ops_per_second": req_s * (a.redis_ops_per_request + a.mix_zarr),
        "curve": [{"cache_over_hot_set": x, "hit_rate": y,
                   "cache_tb": x * hot / 1e12, "nodes": math.ceil(x * hot / node_cache)} for x, y in curve],
    }  # fmt: skip


def _ratio_for(curve: list[tuple[float, float]], target: float) -> float:
    for x, y in curve:
        if y >= target:
            return x
    return curve[-1][0]


def normalize(cluster: Any) -> dict[str, Any] | None:
    """The cluster file in the shape :func:`compare` reads, or None when it is neither accepted shape:
    ``{"format": "labservice-cluster/1", ...}`` (docs/SCALING.md), or the cluster test's own file
    ``{scenario: {figure: value}}`` whose ``throughput`` scenario holds the load figures."""
    if not isinstance(cluster, dict):
        return None
    if str(cluster.get("format", "")).startswith("labservice-cluster/"):
        return cluster
    if not cluster or not all(isinstance(v, dict) for v in cluster.values()):
        return None
    t = cluster.get("throughput", {})
    return {
        "format": "labservice-cluster/1",
        "api_hosts": t.get("api_hosts", 2),
        "cores_per_host": t.get("cores_per_host"),
        "points": {"points_per_second": t.get("points_per_second")},
        "cutout": {"mb_per_second": t.get("mb_per_second")},
        "cache_hit_rate": t.get("cache_hit_rate"),
        "requests_per_second": t.get("requests_per_second"),
        "redis_ops_per_second": t.get("redis_ops_per_second"),
        "db_queries_per_second": t.get("db_queries_per_second"),
        "scenarios": {k: v for k, v in cluster.items() if k != "throughput"},
    }


def compare(m: dict[str, Any], out: dict[str, Any], a: Assumptions, cluster: dict[str, Any]) -> list[str]:
    """Where the cluster's HTTP measurements and the model's per-node figures disagree (more than x2)."""
    lines = []
    hosts = cluster.get("api_hosts") or 1
    cores = cluster.get("cores_per_host") or m["machine_cores"]
    # The model's prediction for the cluster: its api hosts share this machine's cores.
    share = min(cores, m["machine_cores"]) / m["machine_cores"]
    predicted = {
        "points_per_second": m["points_per_second_warm"] * a.http_efficiency * share,
        "mb_per_second": m["cutout_mb_per_second_warm"] * a.http_efficiency * share,
    }
    got = {"points_per_second": (cluster.get("points") or {}).get("points_per_second"),
           "mb_per_second": (cluster.get("cutout") or {}).get("mb_per_second")}  # fmt: skip
    for key, want in predicted.items():
        have = got[key]
        if not have:
            lines.append(f"{key}: not in the cluster file")
            continue
        ratio = have / want
        verdict = "agree" if 0.5 <= ratio <= 2 else "DISAGREE"
        lines.append(f"{key}: cluster {have:,.0f} over {hosts} api hosts vs model {want:,.0f} "
                     f"(ratio {ratio:.2f}, {verdict}; implied http_efficiency {a.http_efficiency * ratio:.2f})")
    hit = cluster.get("cache_hit_rate")
    if hit is not None:
        lines.append(f"cache hit rate: cluster {hit:.2f} (its own mix, cache per host) vs replayed mix at the "
                     f"same cache/working-set: see the curve; round-robin balancing halves each host's share")
    rps = cluster.get("requests_per_second")
    if cluster.get("redis_ops_per_second") and rps:
        per = cluster["redis_ops_per_second"] / rps
        verdict = "agree" if 0.5 <= per / a.redis_ops_per_request <= 2 else "DISAGREE"
        lines.append(f"Redis ops per request: cluster {per:.1f} vs model {a.redis_ops_per_request:.1f} ({verdict})")
    if cluster.get("db_queries_per_second") and rps:
        lines.append(f"PostgreSQL queries per request: cluster {cluster['db_queries_per_second'] / rps:.2f} "
                     f"(the model: at most one token check per caller and process per {a.token_cache_seconds} s)")
    for name, figures in (cluster.get("scenarios") or {}).items():
        lines.append(f"scenario {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    lines.append(f"note: the cluster's hosts share this machine's {m['machine_cores']} cores with the load generator, "
                 "so its per-host figures are lower bounds; the model's per-node figures assume dedicated cores")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer points and 150 recorded requests (~1 min)")
    ap.add_argument("--data", default="/tmp/labservice-bench", help="where the benchmark dataset is built")
    ap.add_argument("--cluster", type=Path, help="the cluster test's measurements (JSON, docs/SCALING.md)")
    ap.add_argument("--json", type=Path, help="write the measurements and figures here")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change an assumption")
    args = ap.parse_args()
    a = Assumptions()
    types = {f.name: f.type for f in fields(Assumptions)}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in types:
            ap.error(f"--set {name}: unknown; one of {', '.join(types)}")
        setattr(a, name, {"int": int, "float": float}[str(types[name])](value))

    cluster = None
    if args.cluster:  # checked before the minute of measuring
        cluster = normalize(json.loads(args.cluster.read_text()))
        if cluster is None:
            ap.error(f"{args.cluster}: not a cluster measurements file (format labservice-cluster/1, or the "
                     "cluster test's {scenario: {figure: value}})")

    m = measure(Path(args.data), args.quick)
    curve = cache_curve(m)
    out = model(m, a, curve)
    ws_chunks = m["working_set_bytes"] // m["chunk_bytes"]
    per_axis = m["grid"] // 32
    routing = {n: (routed_hits(m["requests"], n, max(1, ws_chunks // (2 * n)), False, per_axis),
                   routed_hits(m["requests"], n, max(1, ws_chunks // (2 * n)), True, per_axis))
               for n in (2, 4, 8)}  # fmt: skip

    print(f"measured here ({m['machine_cores']} cores, {m['grid']}^3 velocity, chunks of {m['chunk_bytes'] / MB:.2f} MB):")
    print(f"  points/s lag4: warm {m['points_per_second_warm']:,.0f}, cold {m['points_per_second_cold']:,.0f}")
    print(f"  cutout MB/s:   warm {m['cutout_mb_per_second_warm']:,.0f}, cold {m['cutout_mb_per_second_cold']:,.0f}")
    print(f"  recorded mix:  {m['mix_requests']} requests in {m['mix_seconds']:.1f} s, working set "
          f"{m['working_set_bytes'] / MB:.0f} MB, {m['chunk_bytes_per_point']:,.0f} chunk bytes/point, "
          f"{m['chunk_bytes_per_cutout_byte']:.2f} chunk bytes/cutout byte")
    print("  hit rate vs cache/working set: " + ", ".join(f"{x:.3g}: {y:.2f}" for x, y in curve))
    for n, (rr, rt) in routing.items():
        print(f"  {n} nodes, each caching 1/{2 * n} of the working set: round robin {rr:.2f}, routed by Morton range {rt:.2f}")
    print(f"\nassumptions: {json.dumps(asdict(a))}")
    print(f"\nmodel for {a.dataset_pb:g} PB and {a.users} concurrent users:")
    print(f"  demand: {out['requests_per_second']:,.0f} requests/s, {out['demand_points_per_second']:,.0f} points/s, "
          f"{out['demand_mb_per_second']:,.0f} MB/s")
    print(f"  per node ({a.node_cores} cores): {out['node_points_per_second']:,.0f} points/s, {out['node_mb_per_second']:,.0f} MB/s")
    print(f"  nodes: {out['nodes']} ({out['nodes_for_throughput']} for throughput, {out['nodes_for_cache']} to cache "
          f"{a.target_hit_rate:.0%} of a {out['hot_set_tb']:,.0f} TB hot set)")
    print(f"  aggregate: {out['aggregate_points_per_second']:,.0f} points/s, {out['aggregate_mb_per_second']:,.0f} MB/s")
    print(f"  hit rate: {out['hit_rate_routed']:.2f} routed by Morton range, {out['hit_rate_round_robin']:.2f} round robin")
    print("  cache size -> hit rate: " + ", ".join(f"{c['cache_tb']:,.1f} TB ({c['nodes']} nodes): {c['hit_rate']:.2f}"
                                                for c in out["curve"]))
    print(f"  S3 must serve: {out['s3_mb_per_second_routed']:,.0f} MB/s ({out['s3_gets_per_second_routed']:,.0f} GET/s) "
          f"routed, {out['s3_mb_per_second_round_robin']:,.0f} MB/s round robin")
    print(f"  PostgreSQL: {out['db_queries_per_second']:,.0f} queries/s; Redis: {out['redis_ops_per_second']:,.0f} ops/s")
    result = {"measured": {k: v for k, v in m.items() if k != "requests"}, "assumptions": asdict(a), "model": out,
              "routing": {str(n): {"round_robin": rr, "routed": rt} for n, (rr, rt) in routing.items()}}  # fmt: skip
    if cluster is not None:
        result["comparison"] = compare(m, out, a, cluster)
        print(f"\ncluster measurements ({args.cluster}) against the model:")
        for line in result["comparison"]:
            print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
