"""The job engine as its own service: two `labservice engine` processes and two API servers.

All real: a PostgreSQL server (tests/plugin/postgres.py) as the platform database, `dask scheduler` and
2 `dask worker` processes, two `labservice engine` processes, and two API apps on uvicorn with
``engine="external"`` that share the database and the scratch folder. A job submitted through one API is
listed, polled, downloaded and cancelled through the other; the engines split jobs between them; an
engine killed with SIGKILL mid-job is replaced by the other, with output bit-identical to a clean run.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

import labservice
from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.jobs import JobEngine, JobRegistry
from labservice.jobs.parts import executing_keys
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore
from tests.plugin.engine_proc import EngineService

pytestmark = [pytest.mark.dask, pytest.mark.slow]

NT = 12
LEASE = 3.0  # seconds: a killed engine's job is taken over this long after its last heartbeat
# Small shards, as tests/plugin/jobs.make_engine: a 64^3 cutout splits into many tasks.
JOB_OPTIONS = {"shard_edge": 16, "chunk_edge": 8, "task_bytes": 16 * 16 * 16 * 3 * 4, "points_per_task": 2000}
LIMITS = Limits(points_per_request=10_000, requests_per_minute=100_000, max_concurrent=64, jobs_allowed=True,
                max_running_jobs=8, scratch_bytes=1 << 30, max_job_bytes=1 << 28)  # fmt: skip
BIG = {"kind": "cutout", "dataset": "synthetic", "variables": ["velocity", "pressure"],
       "time_indices": list(range(NT))}  # fmt: skip  # 1536 tasks: long enough to strike mid-job


@pytest.fixture(scope="module")
def platform(tmp_path_factory, postgres_server, dask_processes, helpers) -> Iterator[dict]:
    """The database, the data, the scratch folder, a token, and the two engine processes."""
    from labservice.db import upgrade

    root = tmp_path_factory.mktemp("engine-service")
    url = str(root / "synthetic.zarr")
    helpers.build(url, n=64, nt=NT)
    db = postgres_server.create_database()
    upgrade(db)
    _, token = TokenStore(db).create("svc", LIMITS)
    env = {
        "LABSERVICE_DATABASE_URL": db,
        "LABSERVICE_SCRATCH_URL": str(root / "scratch"),
        "LABSERVICE_DASK_SCHEDULER": dask_processes.address,
        "LABSERVICE_DATASETS": json.dumps({"synthetic": url}),
        "LABSERVICE_JOB_OPTIONS": json.dumps(JOB_OPTIONS),
        "LABSERVICE_ENGINE_LEASE_SECONDS": str(LEASE),
        "LABSERVICE_ENGINE_POLL_SECONDS": "0.2",
        "LABSERVICE_ENGINE_MAX_JOBS": "1",  # so that two jobs at once must run on both engines
    }
    engines = [EngineService(env, root / f"engine-{i}.log") for i in range(2)]
    try:
        for e in engines:
            e.wait_ready()
        yield {"root": root, "db": db, "url": url, "token": token, "env": env, "engines": engines,
               "registry": JobRegistry(db), "dask": dask_processes}  # fmt: skip
    finally:
        for e in engines:
            e.stop()


@pytest.fixture(scope="module")
def apis(platform) -> Iterator[list[httpx.Client]]:
    """Two API servers (engine external) on the same database and scratch: two hosts behind a balancer."""
    settings = Settings(
        database_url=platform["db"], datasets={"synthetic": platform["url"]}, scratch_url=platform["env"][
            "LABSERVICE_SCRATCH_URL"], engine="external", jobs_enabled=True, job_options=JOB_OPTIONS,
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {platform['token']}"}
    apps = [create_app(settings), create_app(settings)]
    with ServerThread(apps[0]) as a, ServerThread(apps[1]) as b:
        for app in apps:  # the API side runs no engine and holds no Dask client
            assert app.state.jobs is not None and not isinstance(app.state.jobs, JobEngine)
        with httpx.Client(base_url=a.url, headers=auth, timeout=60) as ca, httpx.Client(
            base_url=b.url, headers=auth, timeout=60
        ) as cb:
            yield [ca, cb]


def wait_for(api: httpx.Client, job_id: str, ok, timeout: float = 240.0) -> dict:
    """Poll GET /jobs/{id} until ``ok(body)``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/jobs/{job_id}").json()
        if ok(body):
            return body
        assert body["status"] in ("queued", "running"), body
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id}: {body}")


def eventually(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def running_tasks(platform, job_id: str) -> list[str]:
    from distributed import Client

    with Client(platform["dask"].address, set_as_default=False, timeout=30) as client:
        running = client.run(executing_keys)
    return [k for keys in running.values() for k in keys if job_id in k]


def zarr_sum(body: dict) -> str:
    assert body["status"] == "done", body
    return next(f["sha256"] for f in body["files"] if f["name"] == "cutout.zarr")


def test_a_job_from_one_api_is_polled_and_downloaded_through_the_other(platform, apis):
    a, b = apis
    req = {"kind": "cutout", "dataset": "synthetic", "variable": "pressure", "time": 0.2, "x": "0:32",
           "y": "4:20", "z": "0:16:2", "format": "hdf5"}  # fmt: skip
    r = a.post("/api/v1/jobs", json=req)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert job_id in {j["id"] for j in b.get("/api/v1/jobs").json()["jobs"]}
    body = wait_for(b, job_id, lambda j: j["status"] == "done", timeout=120)
    assert body["progress"]["done"] == body["progress"]["total"] > 0 and body["attempts"] == 1
    h5 = next(f for f in body["files"] if f["name"].endswith(".h5"))
    got = b.get(body["links"]["files"][h5["name"]])
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == h5["sha256"]
    part = a.get(body["links"]["files"][h5["name"]], headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == got.content[10:100]
    import h5py

    with h5py.File(io.BytesIO(got.content), "r") as f:
        data = f["pressure"][0]
    ref = labservice.open_dataset(platform["url"]).cutout(
        "pressure", time=0.2, x=(0, 32), y=(4, 20), z=(0, 16, 2)
    )
    np.testing.assert_array_equal(data, ref.data)
    # Deleting through the other API removes the files of the done job.
    assert a.delete(f"/api/v1/jobs/{job_id}").json()["status"] == "expired"
    assert b.get(f"/api/v1/jobs/{job_id}").json()["status"] == "expired"


def test_two_engines_split_jobs_and_a_cancel_reaches_the_owning_engine(platform, apis):
    a, b = apis
    ids = [a.post("/api/v1/jobs", json=BIG).json()["id"] for _ in range(2)]
    try:
        for job_id in ids:
            wait_for(b, job_id, lambda j: j["status"] == "running" and j["progress"]["done"] >= 5)
        owners = {platform["registry"].get(i).engine_id for i in ids}
        assert owners == {e.engine_id for e in platform["engines"]}  # one job each (max_jobs 1)
        victim, other = ids
        holder = platform["registry"].get(victim).engine_id
        owner = next(e for e in platform["engines"] if e.engine_id == holder)
        t0 = time.monotonic()
        r = b.delete(f"/api/v1/jobs/{victim}")  # through the API process that did not take the job
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert a.get(f"/api/v1/jobs/{victim}").json()["status"] == "cancelled"
        while running_tasks(platform, victim):
            assert time.monotonic() - t0 < 5, "workers still run tasks of the cancelled job after 5 s"
            time.sleep(0.1)
        print(f"cancel through the other API reached the workers in {time.monotonic() - t0:.2f} s")
        deadline = t0 + 10
        while (platform["root"] / "scratch" / victim).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (platform["root"] / "scratch" / victim).exists(), "the owning engine left the job's files"
        assert f"job {victim}: cancel requested" in owner.text()
        assert eventually(lambda: platform["registry"].get(victim).engine_id is None)  # the engine let go
        # The other job was not touched by that cancel.
        body = b.get(f"/api/v1/jobs/{other}").json()
        assert body["status"] == "running", body
    finally:
        for job_id in ids:
            a.delete(f"/api/v1/jobs/{job_id}")
    assert [b.get(f"/api/v1/jobs/{i}").json()["status"] for i in ids] == ["cancelled", "cancelled"]


@pytest.fixture(scope="module")
def clean(apis) -> dict:
    """An undisturbed run of the big job."""
    a, b = apis
    body = wait_for(b, a.post("/api/v1/jobs", json=BIG).json()["id"], lambda j: j["status"] == "done")
    assert body["attempts"] == 1
    return body


def test_engine_sigkill_mid_job_the_other_engine_takes_over(platform, apis, clean):
    a, b = apis
    job_id = a.post("/api/v1/jobs", json=BIG).json()["id"]
    seen = wait_for(b, job_id, lambda j: j["status"] == "running" and j["progress"]["done"] >= 20)
    assert seen["progress"]["done"] < seen["progress"]["total"]
    engines = platform["engines"]
    victim = next(e for e in engines if e.engine_id == platform["registry"].get(job_id).engine_id)
    survivor = next(e for e in engines if e is not victim)
    victim.kill()
    killed = time.monotonic()
    try:
        assert b.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"  # not lost, not falsely done
        taken = wait_for(a, job_id, lambda j: j["attempts"] == 2 or j["status"] != "running")
        print(f"taken over {time.monotonic() - killed:.1f} s after the SIGKILL (lease {LEASE} s)")
        body = wait_for(a, job_id, lambda j: j["status"] == "done")
        assert taken["attempts"] == body["attempts"] == 2  # the takeover shows
        assert zarr_sum(body) == zarr_sum(clean)  # bit-identical to the undisturbed run
        assert f"resuming job {job_id}" in survivor.text()
        folder = platform["root"] / "scratch" / job_id
        left = [p.name for p in folder.iterdir() if p.name in (".parts", ".work")]
        assert not left, f"working entries left in the finished job's scratch: {left}"
    finally:
        again = EngineService(platform["env"], victim.log.with_suffix(".2.log"))
        engines[engines.index(victim)] = again.wait_ready()


def test_postgres_restart_mid_job_loses_and_doubles_nothing(platform, clean, private_postgres, tmp_path):
    """PostgreSQL restarted under a running job: the engine rides it out, the job ends done, once."""
    from labservice.db import upgrade

    db = private_postgres.create_database()
    upgrade(db)
    _, token = TokenStore(db).create("pg", LIMITS)
    scratch = str(tmp_path / "scratch")
    env = platform["env"] | {"LABSERVICE_DATABASE_URL": db, "LABSERVICE_SCRATCH_URL": scratch}
    engine = EngineService(env, tmp_path / "engine.log").wait_ready()
    settings = Settings(database_url=db, datasets={"synthetic": platform["url"]}, scratch_url=scratch,
                        engine="external", jobs_enabled=True, job_options=JOB_OPTIONS)  # fmt: skip
    try:
        with ServerThread(create_app(settings)) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as api:
            job_id = api.post("/api/v1/jobs", json=BIG).json()["id"]
            wait_for(api, job_id, lambda j: j["status"] == "running" and j["progress"]["done"] >= 20)
            private_postgres.restart()
            statuses, deadline, first = set(), time.monotonic() + 240, None
            while time.monotonic() < deadline:
                r = api.get(f"/api/v1/jobs/{job_id}")
                statuses.add(r.status_code)
                first = first or (r.json() if r.status_code == 200 else None)
                if r.status_code == 200 and r.json()["status"] not in ("queued", "running"):
                    break
                assert r.status_code in (200, 503), r.text  # 503 only while the database is away
                time.sleep(0.1)
            body = r.json()
            assert first["status"] == "running" and first["progress"]["done"] < first["progress"]["total"]
            assert zarr_sum(body) == zarr_sum(clean)
            jobs = api.get("/api/v1/jobs").json()["jobs"]
            assert [j["id"] for j in jobs] == [job_id]  # not doubled
            assert f"job {job_id} failed" not in engine.text()
    finally:
        engine.stop()


def test_engine_sigterm_hands_its_job_back_at_once(platform, apis, clean):
    """A clean stop releases the lease (no waiting for it to expire); the other engine finishes the job."""
    a, b = apis
    job_id = a.post("/api/v1/jobs", json=BIG).json()["id"]
    wait_for(b, job_id, lambda j: j["status"] == "running" and j["progress"]["done"] >= 20)
    engines = platform["engines"]
    victim = next(e for e in engines if e.engine_id == platform["registry"].get(job_id).engine_id)
    try:
        assert victim.stop() == 0
        after = platform["registry"].get(job_id)
        # Released, not left to expire: nobody, or the other engine already, holds it.
        assert after.status == "running" and after.engine_id != victim.engine_id
        body = wait_for(a, job_id, lambda j: j["status"] == "done")
        assert body["attempts"] == 2 and zarr_sum(body) == zarr_sum(clean)
    finally:
        again = EngineService(platform["env"], victim.log.with_suffix(".3.log"))
        engines[engines.index(victim)] = again.wait_ready()


def test_unknown_job_options_are_refused_naming_the_keys(tmp_path):
    from labservice.errors import InvalidInput
    from labservice.jobs.wiring import front_from_settings

    settings = Settings(job_db=tmp_path / "jobs.sqlite", scratch_url=str(tmp_path / "scratch"),
                        job_options={"shard_edge": 16, "shard": 8})  # fmt: skip
    with pytest.raises(InvalidInput, match=r"unknown keys \['shard'\].*shard_edge, chunk_edge"):
        front_from_settings(settings)
    good = settings.model_copy(update={"job_options": {"shard_edge": 16}})
    assert front_from_settings(good).shard_edge == 16
