"""Health probes, /metrics, the JSON access log and the zarr view's Cache-Control, on real servers.

Each test starts its own fresh server (in-process uvicorn, or ``labservice serve`` processes for the
multi-process cases), so that /metrics must count exactly the requests the test made.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from labservice.app import create_app
from labservice.devserver import ServeProcess, ServerThread
from labservice.limits import Limits
from labservice.metrics import Metrics
from labservice.settings import Settings
from labservice.tokens import TokenStore
from tests.plugin.redis import RedisServer

POINTS = {"variable": "velocity", "time": 0.1, "points": [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}
SHARD = "/api/v1/datasets/periodic16/zarr/velocity/c/0/0/0/0/0"
BIG = Limits(points_per_request=20_000, max_cutout_bytes=1 << 20, requests_per_minute=100_000, max_concurrent=64)


@contextmanager
def fresh_server(served: dict[str, str], workdir: Path, **options: Any) -> Iterator[tuple[ServerThread, Any]]:
    settings = Settings(datasets=served, token_db=workdir / "db" / "tokens.sqlite", **options)
    (workdir / "db").mkdir(exist_ok=True)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield server, app


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    r = httpx.get(url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def requests_by(samples: dict, route: str) -> dict[tuple[str, str], float]:
    """{(method, status): count} of one route template."""
    found = {}
    for (name, labels), value in samples.items():
        lab = dict(labels)
        if name == "labservice_requests_total" and lab["route"] == route:
            found[(lab["method"], lab["status"])] = value
    return found


# -- /livez and /readyz ----------------------------------------------------------------------------
def test_probes_sit_outside_api_and_its_rate_limit(sample_urls: dict[str, str], tmp_path: Path) -> None:
    with fresh_server(sample_urls, tmp_path, public_requests_per_minute=2) as (server, _):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(5):  # more than the public rate limit allows under /api/
                assert c.get("/livez").status_code == 200
                r = c.get("/readyz")
                assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "ok"
            assert body["checks"]["database:tokens"]["ok"] is True
            assert body["checks"]["storage:periodic16"]["ok"] is True
            assert body["checks"]["redis"] == {"ok": True, "configured": False}
            assert "x-ratelimit-limit" not in r.headers
            # the old health route stays under /api/v1, behind the limits
            statuses = [c.get("/api/v1/health").status_code for _ in range(3)]
            assert statuses[:2] == [200, 200] and statuses[2] == 429


def test_readyz_503_while_the_database_folder_is_gone(sample_urls: dict[str, str], tmp_path: Path) -> None:
    with fresh_server(sample_urls, tmp_path) as (server, _):
        assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
        (tmp_path / "db").rename(tmp_path / "db-away")
        try:
            r = httpx.get(server.url + "/readyz", timeout=30)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"]
            assert r.json()["status"] == "unavailable"
            assert r.json()["checks"]["database:tokens"]["ok"] is False
            assert httpx.get(server.url + "/livez", timeout=30).status_code == 200  # alive, not ready
        finally:
            (tmp_path / "db-away").rename(tmp_path / "db")
        assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200


def test_readyz_503_while_a_dataset_store_is_gone(sample_urls: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "periodic16.zarr"
    shutil.copytree(sample_urls["periodic16"], store)
    with fresh_server({"periodic16": str(store)}, tmp_path) as (server, _):
        assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
        store.rename(tmp_path / "moved.zarr")
        r = httpx.get(server.url + "/readyz", timeout=30)
        assert r.status_code == 503
        assert r.json()["checks"]["storage:periodic16"]["ok"] is False


def test_readyz_503_while_configured_redis_is_down(
    sample_urls: dict[str, str], tmp_path: Path, redis_server: RedisServer
) -> None:
    with fresh_server(sample_urls, tmp_path, redis_url=redis_server.url) as (server, app):
        r = httpx.get(server.url + "/readyz", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["redis"]["ok"] is True and r.json()["limits"] == "shared"
        redis_server.stop()
        try:
            # the API keeps answering on per-process limits
            assert httpx.get(server.url + "/api/v1/datasets", timeout=30).status_code == 200
            r = httpx.get(server.url + "/readyz", timeout=30)
            assert r.status_code == 503, r.text
            assert r.json()["checks"]["redis"]["ok"] is False
            assert r.json()["status"] == "degraded" and r.json()["limits"] == "per-process"
            assert app.state.limits_backend.degraded
            assert scrape(server.url)[("labservice_limits_degraded", ())] == 1.0
        finally:
            redis_server.start()
        deadline = time.monotonic() + 20
        while httpx.get(server.url + "/readyz", timeout=30).status_code != 200:  # bounded: 20 s
            assert time.monotonic() < deadline, "readyz stayed 503 after Redis came back"
            time.sleep(0.2)


# -- /metrics --------------------------------------------------------------------------------------
def test_metrics_count_exactly_the_requests_made(sample_urls: dict[str, str], tmp_path: Path) -> None:
    with fresh_server(sample_urls, tmp_path) as (server, _):
        sent: dict[str, int] = {}
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for _ in range(3):
                r = c.get("/api/v1/datasets")
                sent["/api/v1/datasets"] = sent.get("/api/v1/datasets", 0) + len(r.content)
            for _ in range(2):
                r = c.post("/api/v1/datasets/periodic16/points", json=POINTS)
                assert r.status_code == 200, r.text
            assert c.get("/api/v1/datasets/nosuch").status_code == 404
            assert c.get("/no/such/path").status_code == 404
            assert c.get("/livez").status_code == 200
        m = scrape(server.url)
    assert requests_by(m, "/api/v1/datasets") == {("GET", "200"): 3}
    assert requests_by(m, "/api/v1/datasets/{dataset_id}/points") == {("POST", "200"): 2}
    assert requests_by(m, "/api/v1/datasets/{dataset_id}") == {("GET", "404"): 1}
    assert requests_by(m, "unmatched") == {("GET", "404"): 1}  # never the raw path
    assert requests_by(m, "/livez") == {("GET", "200"): 1}
    assert requests_by(m, "/metrics") == {}  # the scrape itself is counted after it answered
    routes = {dict(k[1])["route"] for k in m if k[0] == "labservice_requests_total"}
    assert routes == {"/api/v1/datasets", "/api/v1/datasets/{dataset_id}/points", "/api/v1/datasets/{dataset_id}",
                      "unmatched", "/livez"}
    assert m[("labservice_points_served_total", ())] == 2 * len(POINTS["points"])
    assert m[("labservice_bytes_served_total", (("route", "/api/v1/datasets"),))] == sent["/api/v1/datasets"]
    latency = ("labservice_request_duration_seconds_count", (("route", "/api/v1/datasets/{dataset_id}/points"),))
    assert m[latency] == 2
    hits, misses = m[("labservice_chunk_cache_hits_total", ())], m[("labservice_chunk_cache_misses_total", ())]
    assert misses > 0 and hits > 0  # the second identical query found its chunks cached


def test_metrics_count_limit_refusals_by_kind(sample_urls: dict[str, str], tmp_path: Path) -> None:
    with fresh_server(
        sample_urls, tmp_path, public_points_per_request=2, public_requests_per_minute=4, public_bytes_per_minute=600
    ) as (server, _):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.post("/api/v1/datasets/periodic16/points", json=POINTS).status_code == 413  # 3 points > 2
            # 600 bytes a minute: the first 400-byte read passes, the second is over the budget
            assert c.get(SHARD, headers={"Range": "bytes=0-399"}).status_code == 206
            assert c.get(SHARD, headers={"Range": "bytes=0-399"}).status_code == 429
            statuses = [c.get("/api/v1/datasets").status_code for _ in range(4)]
        m = scrape(server.url)
    assert statuses == [200, 200, 200, 429]  # 4 a minute, one taken by the points request
    assert m[("labservice_limit_refusals_total", (("kind", "size"),))] == 1
    assert m[("labservice_limit_refusals_total", (("kind", "bytes"),))] == 1
    assert m[("labservice_limit_refusals_total", (("kind", "rate"),))] == 1
    assert m[("labservice_limit_refusals_total", (("kind", "concurrency"),))] == 0
    # refused before routing, and still counted under the route's template
    assert requests_by(m, "/api/v1/datasets") == {("GET", "200"): 3, ("GET", "429"): 1}


def test_jobs_by_state_come_from_the_registry(tmp_path: Path) -> None:
    from labservice.jobs.registry import JobRegistry

    registry = JobRegistry(tmp_path / "jobs.sqlite")
    ids = [registry.insert_if_within("alice", "cutout", {}, 10, None, None)[0].id for _ in range(4)]
    registry.start(ids[1], total=3)
    registry.end(ids[2], "failed", "boom")
    registry.end(ids[3], "cancelled", "by its owner")
    text = Metrics(lambda: registry).exposition().decode()
    jobs = {s.labels["state"]: s.value for f in text_string_to_metric_families(text) if f.name == "labservice_jobs"
            for s in f.samples}
    assert jobs == {"queued": 1, "running": 1, "done": 0, "failed": 1, "cancelled": 1, "expired": 0}


def _serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"LABSERVICE_TOKEN_DB": str(tmp_path / "tokens.sqlite"), "LABSERVICE_JOBS_ENABLED": "false", **extra}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def _pids_and_count(url: str, want: int, seen_pids: set[int]) -> int:
    """GET /livez on fresh connections until ``want`` answers came back; returns how many were sent."""
    for _ in range(want):
        with httpx.Client(timeout=30) as c:  # a new connection each: the kernel spreads them over workers
            r = c.get(url + "/livez")
            assert r.status_code == 200
            seen_pids.add(r.json()["pid"])
    return want


def test_metrics_add_up_across_two_worker_processes(
    sample_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    env = _serve_env(tmp_path, LABSERVICE_REDIS_URL=redis_server.url)
    with ServeProcess(sample_dir, env, tmp_path / "serve.log", workers=2) as served:
        served.wait_ready()
        pids: set[int] = set()
        sent = 0
        for _ in range(20):  # bounded: until both workers answered at least once
            sent += _pids_and_count(served.url, 5, pids)
            if len(pids) == 2:
                break
        assert len(pids) == 2, f"one worker answered every request: {pids}\n{served.log_tail()}"
        for _ in range(4):  # any worker's /metrics reports the sum over both
            assert requests_by(scrape(served.url), "/livez") == {("GET", "200"): sent}
        # each worker writes its JSON access lines to the server's stderr (in batches, 4 a second)
        deadline = time.monotonic() + 10
        while True:  # bounded: 10 s
            lines = [json.loads(x) for x in served.log.read_text().splitlines() if x.startswith("{")]
            livez = [x for x in lines if x["route"] == "/livez"]
            if len(livez) >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(livez) == sent and all(x["status"] == 200 and x["request_id"] for x in livez)


def test_metrics_add_up_across_processes_sharing_the_folder(sample_dir: Path, tmp_path: Path) -> None:
    """Two single-worker servers given one PROMETHEUS_MULTIPROC_DIR (as a supervisor would) report the sum."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**_serve_env(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    with ServeProcess(sample_dir, env, tmp_path / "a.log") as a, ServeProcess(sample_dir, env, tmp_path / "b.log") as b:
        a.wait_ready()
        b.wait_ready()
        pids: set[int] = set()
        sent_a = _pids_and_count(a.url, 3, pids)
        sent_b = _pids_and_count(b.url, 4, pids)
        assert len(pids) == 2
        assert requests_by(scrape(a.url), "/livez") == {("GET", "200"): sent_a + sent_b}
        assert requests_by(scrape(b.url), "/livez") == {("GET", "200"): sent_a + sent_b}
    assert list(folder.glob("*.db")), "the shared folder belongs to the supervisor and is left in place"


def test_metrics_off_switch(sample_urls: dict[str, str], tmp_path: Path) -> None:
    with fresh_server(sample_urls, tmp_path, metrics=False, access_log=False) as (server, app):
        r = httpx.get(server.url + "/metrics", timeout=30)
        assert r.status_code == 404 and "LABSERVICE_METRICS" in r.json()["detail"]
        assert "x-request-id" not in httpx.get(server.url + "/livez", timeout=30).headers


# -- the access log --------------------------------------------------------------------------------
class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    logger = logging.getLogger("labservice.access")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_access_log_line_and_request_id(sample_urls: dict[str, str], tmp_path: Path, access_lines: list[str]) -> None:
    with fresh_server(sample_urls, tmp_path) as (server, _):
        record, token = TokenStore(tmp_path / "db" / "tokens.sqlite").create("alice", BIG)
        token_id = getattr(record, "id", record)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/api/v1/datasets/periodic16/points", json=POINTS,
                       headers={"Authorization": f"Bearer {token}", "X-Request-ID": "trace-42.a:b"})
            assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42.a:b"
            bad = c.get("/livez", headers={"X-Request-ID": "no spaces or\ttabs " + "x" * 200})
            generated = bad.headers["x-request-id"]
            assert len(generated) == 32 and int(generated, 16) >= 0
            assert c.get("/livez").headers["x-request-id"] != generated  # a new id per request
            z = c.get(SHARD, params={"token": token}, headers={"Range": "bytes=0-99"})
            assert z.status_code == 206
    lines = [json.loads(line) for line in access_lines]
    assert len(lines) == 4  # exactly one line per request
    points = next(x for x in lines if x["request_id"] == "trace-42.a:b")
    assert points["route"] == "/api/v1/datasets/{dataset_id}/points"
    assert points["method"] == "POST" and points["status"] == 200 and points["duration_ms"] > 0
    assert points["token_id"] == token_id and points["points"] == 3 and points["cost"] == 3
    assert points["bytes"] == len(r.content)
    assert token.split("_", 2)[2] not in "\n".join(access_lines)  # never the secret
    livez = next(x for x in lines if x["request_id"] == generated)
    assert livez["route"] == "/livez" and livez["token_id"] is None and livez["points"] == 0
    zarr = lines[-1]
    assert zarr["route"] == "/api/v1/datasets/{dataset_id}/zarr/{key}" and zarr["bytes"] == 100 == zarr["cost"]
    assert "token" not in json.dumps(zarr).replace("token_id", "")  # the query string is never logged


# -- the zarr view's Cache-Control ----------------------------------------------------------------
def test_zarr_reads_with_a_token_are_private(sample_urls: dict[str, str], tmp_path: Path) -> None:
    with fresh_server(sample_urls, tmp_path) as (server, _):
        _, token = TokenStore(tmp_path / "db" / "tokens.sqlite").create("bob", BIG)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            rng = {"Range": "bytes=0-99"}
            by_header = c.get(SHARD, headers={**rng, "Authorization": f"Bearer {token}"})
            by_query = c.get(SHARD, params={"token": token}, headers=rng)
            doc = c.get("/api/v1/datasets/periodic16/zarr/zarr.json", headers={"Authorization": f"Bearer {token}"})
            public = c.get(SHARD, headers=rng)
    for r in (by_header, by_query, doc):
        assert r.status_code in (200, 206), r.text
        assert r.headers["cache-control"].startswith("private"), r.headers["cache-control"]
        assert "public" not in r.headers["cache-control"]
    assert public.headers["cache-control"] == "public, max-age=3600"
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None  # the in-process servers kept no shared files
