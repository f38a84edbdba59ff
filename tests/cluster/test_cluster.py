"""labservice across hosts that share only a network (tests/cluster/cluster.py builds them in namespaces).

Every scenario goes through ``lb`` unless it names a host, prints its figures (requests, failures, time to
recover) and records them in the JSON file of :data:`FIGURES_FILE` for the scale model (benchmarks/).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.cluster import Cluster, build, teardown
from tests.plugin.netns import Network, leftovers, netns_available

pytestmark = [pytest.mark.slow, pytest.mark.dask, pytest.mark.s3]
if netns_available():
    pytestmark.append(pytest.mark.skip(reason=str(netns_available())))

# Read by benchmarks/scale_model.py --cluster FILE (format in /work/notes/i20-config.md).
FIGURES_FILE = Path(os.environ.get("LABSERVICE_CLUSTER_REPORT", "/tmp/labservice-cluster-figures.json"))
FIGURES: dict[str, dict] = {}
BIG = {"kind": "cutout", "dataset": "synthetic", "variables": ["velocity", "pressure"],
       "time_indices": list(range(12))}  # fmt: skip
CUTOUT = "/api/v1/datasets/periodic16/cutout?variable=velocity&time=0.2&x=0:16&y=2:9&z=0:16:3&format=npy"


def record(name: str, **figures) -> None:
    FIGURES[name] = figures
    print(f"\n[cluster] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    FIGURES_FILE.write_text(json.dumps(FIGURES, indent=1, sort_keys=True))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    t0 = time.monotonic()
    c = build()  # its own /tmp folder: pytest's is closed to the postgres user
    record("build", seconds=round(time.monotonic() - t0, 1), hosts=len(c.a))
    try:
        yield c
    finally:
        teardown(c)
        assert leftovers(c.net.prefix) == [], "the cluster left namespaces or interfaces behind"


@pytest.fixture(scope="session")
def lb(cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.lb, headers={"Authorization": f"Bearer {cluster.token}"},
                      timeout=60) as client:  # fmt: skip
        yield client


def api_client(cluster: Cluster, host: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or cluster.token}"}
    return httpx.Client(base_url=cluster.api[host], headers=headers, timeout=60)


def wait_job(client: httpx.Client, job_id: str, ok, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/jobs/{job_id}").json()
        if ok(body):
            return body
        assert body["status"] in ("queued", "running"), body
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id}: {body}")


def wait_limits_shared(cluster: Cluster, within: float = 6.0, streak: int = 8) -> float:
    """Seconds until every API host answers /readyz with shared limits `streak` times running.

    A process that lost Redis counts locally until its watcher (every second) or a /readyz ping reaches
    Redis again; fresh connections spread the polls over both workers of a host.
    """
    t0 = time.monotonic()
    runs = dict.fromkeys(cluster.api, 0)
    while min(runs.values()) < streak:
        assert time.monotonic() - t0 < within, f"limits still per-process after {within} s: {runs}"
        for host, url in cluster.api.items():
            r = httpx.get(url + "/readyz", timeout=3)
            runs[host] = runs[host] + 1 if r.json().get("limits") == "shared" else 0
        time.sleep(0.05)
    return time.monotonic() - t0


def zarr_sum(body: dict) -> str:
    assert body["status"] == "done", body
    return next(f["sha256"] for f in body["files"] if f["name"] == "cutout.zarr")


def test_a_namespace_build_leaves_nothing_behind(tmp_path):
    net = Network.create(["a", "b"])
    proc = net.spawn("b", ["sleep", "60"], tmp_path / "sleep.log")
    deadline = time.monotonic() + 10  # `ip netns exec` enters the namespace a moment after it starts
    while not net.pids("b") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert net.pids("b") and proc.poll() is None
    net.destroy()
    assert leftovers(net.prefix) == [] and proc.poll() is not None


def test_answers_through_lb_equal_the_in_process_answers(cluster, lb):
    """Points, cutouts, halo searches and zarr reads: the same bytes as an app in this process."""
    from labservice.app import create_app
    from labservice.devserver import ServerThread
    from labservice.settings import Settings

    catalog = Path(cluster.service_env("ref")["LABSERVICE_CATALOG"])
    ref_app = create_app(Settings(catalog=catalog, data_dir=cluster.local_sim.parent))
    pts = [[0.1 * i, 0.2 * i + 0.05, 6.0 - 0.3 * i] for i in range(50)]
    calls = [
        ("POST", "/api/v1/datasets/periodic16/points",
         {"variable": "velocity", "time": 0.15, "points": pts, "spatial": "lag6", "operator": "gradient"}),
        ("GET", CUTOUT, None),
        ("GET", "/api/v1/datasets/wall16/cutout?variable=velocity&time=0&x=0:16&y=0:6&z=3:9&format=msgpack", None),
        ("GET", "/api/v1/datasets/cosmo/snapshots/7/halos?order_by=-mass&limit=20", None),
        ("GET", "/api/v1/datasets/cosmo/snapshots/7/halos?near=25,25,25,15&format=csv", None),
        ("GET", "/api/v1/datasets/periodic16/zarr/zarr.json", None),
        ("GET", "/api/v1/datasets/periodic16/zarr/pressure/zarr.json", None),
    ]  # fmt: skip
    with ServerThread(ref_app) as ref, httpx.Client(base_url=ref.url, timeout=60) as local:
        zarr_meta = json.loads(local.get("/api/v1/datasets/periodic16/zarr/pressure/zarr.json").content)
        sep = zarr_meta.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/")
        ndim = len(zarr_meta["shape"])
        calls.append(("GET", "/api/v1/datasets/periodic16/zarr/pressure/c" + sep + sep.join("0" * ndim), None))
        n = 0
        for _ in range(2):  # twice: both API hosts answer (round robin)
            for method, path, body in calls:
                want = local.request(method, path, json=body)
                got = lb.request(method, path, json=body)
                assert want.status_code == 200, (path, want.text[:300])
                assert got.status_code == 200, (path, got.text[:300])
                assert got.content == want.content, f"{path}: lb answer differs from the in-process one"
                n += 1
    record("same_answers", requests=n, failures=0)


def timed_load(seconds: float, threads: int, call) -> tuple[int, float, list[float]]:
    """``call(client)`` from ``threads`` threads for ``seconds``; (requests, seconds, latencies)."""
    lat: list[float] = []
    lock = threading.Lock()
    t_end = time.monotonic() + seconds

    def loop() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < t_end:
                s = time.monotonic()
                call(client)
                with lock:
                    lat.append(time.monotonic() - s)

    t0 = time.monotonic()
    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 120)
    return len(lat), time.monotonic() - t0, sorted(lat)


def test_throughput_through_lb(cluster):
    """Point batches and cutout bytes per second through lb, and what Redis and PostgreSQL sustained."""
    import numpy as np
    import psycopg
    import redis

    auth = {"Authorization": f"Bearer {cluster.token}"}
    rng = np.random.default_rng(3)
    body = {"variable": "velocity", "time": 0.2, "points": rng.uniform(0, 6.28, (4096, 3)).tolist()}
    cut = "/api/v1/datasets/synthetic/cutout?variable=velocity&time=0.3&x=0:32&y=0:32&z=0:32&format=npy"
    r = redis.Redis.from_url(cluster.redis_url)

    def db_commits() -> int:
        with psycopg.connect(cluster.db_url) as conn:
            return int(conn.execute("SELECT sum(xact_commit) FROM pg_stat_database").fetchone()[0])

    def post_points(client: httpx.Client) -> None:
        assert client.post(cluster.lb + "/api/v1/datasets/periodic16/points", json=body, headers=auth).status_code == 200

    nbytes: list[int] = []

    def get_cutout(client: httpx.Client) -> None:
        got = client.get(cluster.lb + cut, headers=auth)
        assert got.status_code == 200
        nbytes.append(len(got.content))

    cmds0, commits0, t0 = r.info("stats")["total_commands_processed"], db_commits(), time.monotonic()
    n_pts, s_pts, lat = timed_load(5, 8, post_points)
    n_cut, s_cut, _ = timed_load(4, 4, get_cutout)
    span = time.monotonic() - t0
    cmds1, commits1 = r.info("stats")["total_commands_processed"], db_commits()
    r.close()
    record("throughput", api_hosts=2, workers_per_host=2, cores_per_host=os.cpu_count(), clients=8,
           points_requests=n_pts, points_per_request=4096, points_per_second=round(n_pts * 4096 / s_pts),
           p50_ms=round(1000 * lat[len(lat) // 2], 1), p99_ms=round(1000 * lat[int(len(lat) * 0.99)], 1),
           cutout_requests=n_cut, mb_per_second=round(sum(nbytes) / s_cut / 1e6, 2),
           requests_per_second=round((n_pts + n_cut) / span, 1),
           redis_ops_per_second=round((cmds1 - cmds0) / span, 1),
           db_queries_per_second=round((commits1 - commits0) / span, 1))  # fmt: skip
    assert n_pts > 0 and n_cut > 0


def test_a_token_works_on_both_hosts_and_a_revoke_reaches_both_within_1s(cluster):
    from labservice.limits import Limits
    from labservice.tokens import TokenStore

    store = TokenStore(cluster.db_url)
    rec, token = store.create("revoke-me", Limits())
    clients = [api_client(cluster, h, token) for h in ("api1", "api2")]
    try:
        for c in clients:
            assert c.get(CUTOUT).status_code == 200
        store.revoke(rec.id)
        t0 = time.monotonic()
        stopped = {}
        while len(stopped) < 2 and time.monotonic() - t0 < 5:
            for i, c in enumerate(clients):
                if i not in stopped and c.get(CUTOUT).status_code == 401:
                    stopped[i] = time.monotonic() - t0
            time.sleep(0.02)
        record("token_revoke", hosts=2, seconds_to_stop=round(max(stopped.values(), default=99), 3))
        assert len(stopped) == 2 and max(stopped.values()) < 1.0, stopped
    finally:
        for c in clients:
            c.close()


def test_an_async_tap_job_made_on_api1_is_seen_and_managed_from_api2_and_lb(cluster, lb):
    """UWS jobs wait for PHASE=RUN in the platform database (PostgreSQL here), so every host sees them.

    (Running one needs the simulation's files at the same path on the engine and Dask hosts; this topology
    keeps them on the API hosts only, so the job is aborted before it runs.)
    """
    import xml.etree.ElementTree as ET

    uws = "{http://www.ivoa.net/xml/UWS/v1.0}"
    query = {"LANG": "ADQL", "QUERY": "SELECT TOP 7 id, mass FROM cosmo.halos ORDER BY mass DESC", "MAXREC": "5"}
    with api_client(cluster, "api1") as a, api_client(cluster, "api2") as b:
        made = a.post("/tap/async", data=query, follow_redirects=False)
        assert made.status_code == 303, made.text[:300]
        job = made.headers["location"].rsplit("/", 1)[1]
        assert b.get(f"/tap/async/{job}/phase").text == "PENDING"
        assert b.get(f"/tap/async/{job}/parameters").text.count("<uws:parameter id=") == 3
        listed = ET.fromstring(lb.get("/tap/async").content)
        assert job in {ref.get("id") for ref in listed.iter(f"{uws}jobref")}
        r = b.post(f"/tap/async/{job}/phase", data={"PHASE": "ABORT"}, follow_redirects=False)
        assert r.status_code == 303 and a.get(f"/tap/async/{job}/phase").text == "ABORTED"
        assert lb.post(f"/tap/async/{job}", data={"ACTION": "DELETE"}, follow_redirects=False).status_code == 303
        assert a.get(f"/tap/async/{job}").status_code == b.get(f"/tap/async/{job}").status_code == 404


def test_a_job_from_api1_is_polled_downloaded_and_cancelled_through_api2(cluster):
    a, b = api_client(cluster, "api1"), api_client(cluster, "api2")
    with a, b:
        req = {"kind": "cutout", "dataset": "synthetic", "variable": "pressure", "time": 0.1,
               "x": "0:32", "y": "4:20", "z": "0:16:2", "format": "hdf5"}  # fmt: skip
        r = a.post("/api/v1/jobs", json=req)
        assert r.status_code == 202, r.text
        body = wait_job(b, r.json()["id"], lambda j: j["status"] == "done")
        h5 = next(f for f in body["files"] if f["name"].endswith(".h5"))
        got = b.get(body["links"]["files"][h5["name"]])
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == h5["sha256"]
        big = a.post("/api/v1/jobs", json=BIG).json()["id"]
        wait_job(b, big, lambda j: j["status"] == "running")
        assert b.delete(f"/api/v1/jobs/{big}").json()["status"] == "cancelled"
        assert a.get(f"/api/v1/jobs/{big}").json()["status"] == "cancelled"
    record("job_across_hosts", requests=6, failures=0)


@pytest.fixture(scope="session")
def clean_big(lb) -> str:
    """The output checksum of an undisturbed run of the big job."""
    body = wait_job(lb, lb.post("/api/v1/jobs", json=BIG).json()["id"], lambda j: j["status"] == "done")
    return zarr_sum(body)


def test_engine_sigkill_the_other_engine_finishes_bit_identical(cluster, lb, clean_big):
    from labservice.jobs import JobRegistry

    job_id = lb.post("/api/v1/jobs", json=BIG).json()["id"]
    wait_job(lb, job_id, lambda j: j["status"] == "running" and j["progress"]["done"] >= 3)
    holder = JobRegistry(cluster.db_url).get(job_id).engine_id
    victim = next(e for e in cluster.procs["engines"] if e.engine_id == holder)
    victim.kill()
    t0 = time.monotonic()
    body = wait_job(lb, job_id, lambda j: j["status"] == "done")
    record("engine_sigkill", failures=0, seconds_to_finish_after_kill=round(time.monotonic() - t0, 2),
           attempts=body["attempts"])  # fmt: skip
    assert zarr_sum(body) == clean_big
    # Back to two engines for the scenarios after this one.
    from tests.plugin.engine_proc import EngineService

    i = cluster.procs["engines"].index(victim)
    env = cluster.service_env("engine") | {"LABSERVICE_DATA_DIR": str(cluster.dir("engine", f"e{i}b"))}
    cluster.procs["engines"][i] = cluster.spawn_engine(i + 2, env, EngineService).wait_ready()


def test_dask_scheduler_restart_mid_job_loses_and_doubles_nothing(cluster, lb, clean_big):
    job_id = lb.post("/api/v1/jobs", json=BIG).json()["id"]
    wait_job(lb, job_id, lambda j: j["status"] == "running" and j["progress"]["done"] >= 3)
    sched = cluster.procs["scheduler"]
    os.killpg(sched.pid, 9)
    sched.wait(timeout=10)
    t0 = time.monotonic()
    time.sleep(2)
    cluster.procs["scheduler"] = cluster.spawn_scheduler()
    # A worker without a nanny exits when its scheduler goes; the deployment (here: us) starts a new one.
    for i, w in enumerate(cluster.procs["workers"]):
        try:
            w.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass  # still connected (it reconnected): keep it
        else:
            cluster.procs["workers"][i] = cluster.spawn_worker(i)
    body = wait_job(lb, job_id, lambda j: j["status"] == "done", timeout=120)
    record("dask_scheduler_restart", failures=0, seconds_to_finish_after_restart=round(time.monotonic() - t0, 2),
           parts_done=body["progress"]["done"], parts_total=body["progress"]["total"])  # fmt: skip
    assert body["progress"]["done"] == body["progress"]["total"]
    assert zarr_sum(body) == clean_big


def steady_load(url: str, headers: dict, seconds: float, during) -> dict:
    """4 threads of GETs through lb for ``seconds``; ``during(t0)`` runs meanwhile. Times of each failure."""
    results: list[tuple[float, float, bool]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def loop() -> None:
        with httpx.Client(headers=headers, timeout=60) as client:
            while not stop.is_set():
                s = time.monotonic()
                try:
                    ok = client.get(url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    results.append((s, time.monotonic(), ok))

    threads = [threading.Thread(target=loop) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        cut_at = during(t0)
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    failed = [r for r in results if not r[2]]
    return {"requests": len(results), "failures": len(failed), "cut_at": cut_at,
            "in_flight_at_cut": sum(1 for s, e, _ in results if s <= cut_at <= e),
            "errors_until": round(max((e for _, e, _ in failed), default=cut_at) - cut_at, 2),
            "slowest": round(max(e - s for s, e, _ in results), 2)}  # fmt: skip


def test_partition_of_api1_under_load_lb_moves_to_api2(cluster):
    def during(t0: float) -> float:
        time.sleep(2)
        cluster.net.cut("api1")
        return time.monotonic()

    try:
        fig = steady_load(cluster.lb + CUTOUT, {"Authorization": f"Bearer {cluster.token}"}, 14, during)
    finally:
        cluster.net.mend("api1")
    record("partition_api1", requests=fig["requests"], failures=fig["failures"],
           in_flight_at_cut=fig["in_flight_at_cut"], seconds_until_errors_stopped=fig["errors_until"],
           slowest_request_seconds=fig["slowest"])  # fmt: skip
    assert fig["failures"] <= fig["in_flight_at_cut"], fig


def test_partition_of_s3_is_a_503_with_retry_after_then_the_same_answers(cluster, lb):
    # A point query at a time no API process has read yet (not in any chunk cache): it needs S3.
    path = "/api/v1/datasets/synthetic/points"
    body = {"variable": "pressure", "time": 0.7, "points": [[0.1 * i, 0.2, 0.3 * i] for i in range(20)]}
    cluster.net.cut("s3")
    t0 = time.monotonic()
    try:
        r = lb.post(path, json=body)
        assert r.status_code == 503 and "Retry-After" in r.headers, (r.status_code, r.text[:300])
        during = time.monotonic() - t0
    finally:
        cluster.net.mend("s3")
    t1, n = time.monotonic(), 0
    while True:
        n += 1
        got = lb.post(path, json=body)
        if got.status_code == 200 or time.monotonic() - t1 > 30:
            break
        time.sleep(0.2)
    recover = time.monotonic() - t1
    record("partition_s3", requests=n + 1, failures=n, seconds_to_503=round(during, 2),
           seconds_to_recover=round(recover, 2))  # fmt: skip
    assert got.status_code == 200, got.text[:300]
    import labservice

    ref = labservice.open_dataset(cluster.datasets["synthetic"], storage_options=cluster.storage_options)
    import numpy as np

    want = ref.points("pressure", body["points"], time=0.7)
    np.testing.assert_array_equal(np.asarray(got.json()["values"]), want)


def test_partition_of_db_503_for_what_needs_it_public_reads_go_on(cluster, lb):
    public_path = "/api/v1/datasets/periodic16/cutout?variable=pressure&time=0.2&x=0:8&y=0:8&z=0:8&format=npy"
    with httpx.Client(base_url=cluster.lb, timeout=60) as public:
        before = public.get(public_path)
        assert before.status_code == 200
        job = lb.post("/api/v1/jobs", json={**BIG, "time_indices": [0, 1]}).json()["id"]
        cluster.net.cut("db")
        t0 = time.monotonic()
        try:
            time.sleep(1.0)  # past the 0.5 s token cache
            needs_db = lb.get("/api/v1/jobs")
            reads = [public.get(public_path) for _ in range(10)]
            seconds = time.monotonic() - t0
        finally:
            cluster.net.mend("db")
        shared_again = wait_limits_shared(cluster)
        assert needs_db.status_code == 503 and "Retry-After" in needs_db.headers, needs_db.text[:300]
        assert all(r.status_code == 200 and r.content == before.content for r in reads)
        t1 = time.monotonic()
        body = wait_job(lb, job, lambda j: j["status"] == "done", timeout=120)
        record("partition_db", requests=12, failures_needing_db=1, public_reads_ok=10,
               seconds_in_partition=round(seconds, 2), seconds_limits_shared_again=round(shared_again, 2),
               seconds_job_done_after=round(time.monotonic() - t1, 2))
        assert body["progress"]["done"] == body["progress"]["total"]


def test_public_rate_limit_holds_across_both_hosts(cluster):
    from tests.cluster.cluster import PUBLIC_PER_MINUTE

    wait_limits_shared(cluster)  # an earlier partition may have left a process counting locally
    ok = limited = 0
    t0 = time.monotonic()
    with httpx.Client(base_url=cluster.lb, timeout=30) as public:
        for _ in range(PUBLIC_PER_MINUTE + 60):
            r = public.get("/api/v1/datasets/periodic16")
            if r.status_code == 200:
                ok += 1
            else:
                assert r.status_code == 429 and "Retry-After" in r.headers, r.text
                limited += 1
    elapsed = time.monotonic() - t0
    allowed = PUBLIC_PER_MINUTE + elapsed * PUBLIC_PER_MINUTE / 60 + 1
    record("public_rate_limit", requests=ok + limited, allowed=ok, refused=limited, limit=PUBLIC_PER_MINUTE,
           seconds=round(elapsed, 2))  # fmt: skip
    assert ok <= allowed and limited > 0, (ok, limited, allowed)
