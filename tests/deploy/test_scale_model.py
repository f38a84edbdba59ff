"""benchmarks/scale_model.py: the cache replay, the routing simulation, the model and the comparison with the
cluster test's file, on synthetic inputs (the measurement itself runs as a benchmark, not here)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from benchmarks.scale_model import Assumptions, compare, hit_at, lru_hits, model, routed_hits, shard_of

ROOT = Path(__file__).resolve().parents[2]


def hot_trace(seed: int = 0, per_axis: int = 8, count: int = 400) -> list[list[tuple]]:
    """Requests touching compact 2x2x2 blocks of chunks around Zipf-popular centres."""
    rng = random.Random(seed)
    centres = [(rng.randrange(per_axis - 1), rng.randrange(per_axis - 1), rng.randrange(per_axis - 1))
               for _ in range(32)]  # fmt: skip
    weights = [1 / (i + 1) for i in range(32)]
    out = []
    for _ in range(count):
        z, y, x = rng.choices(centres, weights)[0]
        out.append([("tok", "velocity", 0, z + a, y + b, x + c) for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    return out


def test_hit_rate_grows_with_cache_size_and_is_one_when_everything_fits() -> None:
    trace = hot_trace()
    distinct = len({k for r in trace for k in r})
    rates = [lru_hits(trace, c) for c in (4, 16, 64, distinct)]
    assert rates == sorted(rates) and rates[0] < 0.5 and rates[-1] == 1.0


def test_routing_by_morton_range_beats_round_robin() -> None:
    trace = hot_trace()
    distinct = len({k for r in trace for k in r})
    cap = distinct // 8
    rr = routed_hits(trace, 4, cap, routed=False, per_axis=8)
    routed = routed_hits(trace, 4, cap, routed=True, per_axis=8)
    one_big = lru_hits(trace, cap * 4)
    assert routed > rr + 0.1, (routed, rr)
    assert abs(routed - one_big) < 0.2  # N routed caches act as one N times larger
    owners = {shard_of(k, 4, 8) for r in trace for k in r}
    assert owners == {0, 1, 2, 3}


def measured() -> dict:
    return {"machine_cores": 2, "points_per_second_warm": 4e6, "cutout_mb_per_second_warm": 8000.0,
            "chunk_bytes_per_point": 1000.0, "chunk_bytes_per_cutout_byte": 4.0}  # fmt: skip


CURVE = [(1 / 16, 0.2), (1 / 8, 0.3), (1 / 4, 0.4), (1 / 2, 0.7), (3 / 4, 0.85), (1.0, 1.0)]


def test_model_nodes_scale_with_the_hot_set_and_users() -> None:
    base = model(measured(), Assumptions(), CURVE)
    assert base["nodes"] == max(base["nodes_for_throughput"], base["nodes_for_cache"], 2)
    assert base["hit_rate_routed"] > base["hit_rate_round_robin"]
    assert base["s3_mb_per_second_routed"] < base["s3_mb_per_second_round_robin"]
    bigger = model(measured(), Assumptions(hot_fraction=0.1), CURVE)
    assert bigger["nodes_for_cache"] >= 9 * base["nodes_for_cache"]
    busier = model(measured(), Assumptions(users=10_000), CURVE)
    assert busier["demand_points_per_second"] == 10 * base["demand_points_per_second"]
    assert busier["redis_ops_per_second"] == 10 * base["redis_ops_per_second"]
    assert 0.4 < hit_at(CURVE, 0.375) < 0.7 and hit_at(CURVE, 4.0) == 1.0


def test_compare_says_where_the_cluster_disagrees() -> None:
    a = Assumptions()
    cluster = {"format": "labservice-cluster/1", "api_hosts": 2, "cores_per_host": 2,
               "points": {"points_per_second": 4e6 * 0.5 * 1.2},  # within 2x of the model
               "cutout": {"mb_per_second": 8000 * 0.5 / 20},  # 20x below
               "requests_per_second": 100.0, "redis_ops_per_second": 1000.0}  # fmt: skip
    lines = compare(measured(), {}, a, cluster)
    points = next(ln for ln in lines if ln.startswith("points_per_second"))
    cutout = next(ln for ln in lines if ln.startswith("mb_per_second"))
    redis = next(ln for ln in lines if ln.startswith("Redis"))
    assert "agree" in points and "DISAGREE" not in points
    assert "DISAGREE" in cutout and "implied http_efficiency 0.03" in cutout
    assert "cluster 10.0 vs model 2.0 (DISAGREE)" in redis


def test_the_script_refuses_a_wrong_file_or_assumption(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"points": 3}))
    script = str(ROOT / "benchmarks" / "scale_model.py")
    done = subprocess.run([sys.executable, script, "--cluster", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a cluster measurements file" in done.stderr, done.stderr
    done = subprocess.run([sys.executable, script, "--set", "nodes=3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--set nodes: unknown" in done.stderr


def test_the_cluster_tests_own_file_is_read() -> None:
    from benchmarks.scale_model import normalize

    own = {"partition_api1": {"requests": 500, "failures": 2},
           "throughput": {"points_per_second": 1e5, "mb_per_second": 20.0, "api_hosts": 2}}  # fmt: skip
    got = normalize(own)
    assert got is not None and got["points"]["points_per_second"] == 1e5 and got["cutout"]["mb_per_second"] == 20.0
    lines = compare(measured(), {}, Assumptions(), got)
    assert any(ln.startswith("scenario partition_api1: requests=500, failures=2") for ln in lines)
    assert normalize({"points": 3}) is None and normalize([]) is None
