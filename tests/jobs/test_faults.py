"""Fault tests on a real cluster: `dask scheduler` + 2 `dask worker` processes on 127.0.0.1.

A worker killed with SIGKILL, the service killed and restarted, and a cancel, all mid-job. The killed
runs must produce output bit-identical to a clean run (same tree checksum over every stored object).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from labservice.jobs.parts import executing_keys
from labservice.jobs.registry import JobRegistry
from tests.plugin.data import REPO
from tests.plugin.jobs import ENGINE_PROC

pytestmark = [pytest.mark.dask, pytest.mark.slow]


NT = 12


@pytest.fixture(scope="module")
def synthetic_url(tmp_path_factory: pytest.TempPathFactory, helpers) -> str:
    """A longer-running dataset than the shared one: on a quiet machine a 384-task job could finish
    before a fault is injected, and these tests must strike mid-job."""
    url = str(tmp_path_factory.mktemp("faults-data") / "synthetic.zarr")
    helpers.build(url, n=64, nt=NT)
    return url


def request(url: str) -> dict:
    # 64^3 x 12 times x 2 variables in 16^3 shards: 1536 tasks.
    return {
        "kind": "cutout",
        "dataset": url,
        "variables": ["velocity", "pressure"],
        "time_indices": list(range(NT)),
    }


def zarr_sum(rec) -> str:
    assert rec.status == "done", rec.error
    return next(f["sha256"] for f in rec.files if f["name"] == "cutout.zarr")


@pytest.fixture(scope="module")
def cluster_engine(dask_processes, tmp_path_factory, helpers) -> Iterator:
    eng = helpers.make_engine(tmp_path_factory.mktemp("cluster"), scheduler=dask_processes.address).start()
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def clean_sum(cluster_engine, synthetic_url) -> str:
    rec = cluster_engine.submit("tokF", request(synthetic_url))
    return zarr_sum(cluster_engine.wait(rec.id, timeout=240))


def test_worker_sigkill_mid_job_gives_identical_output(
    cluster_engine, dask_processes, synthetic_url, clean_sum, helpers
):
    rec = cluster_engine.submit("tokF", request(synthetic_url))
    seen = helpers.wait_progress(cluster_engine, rec.id, 20)
    assert seen.status == "running" and seen.done < seen.total
    victim = dask_processes.workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    try:
        done = cluster_engine.wait(rec.id, timeout=240)
        assert done.done == done.total == seen.total
        assert zarr_sum(done) == clean_sum
    finally:
        dask_processes.workers[0] = dask_processes.add_worker()
        dask_processes.wait_workers(2)


def test_service_killed_mid_job_resumes_after_restart(
    dask_processes, synthetic_url, clean_sum, tmp_path, helpers
):
    args = {"root": str(tmp_path), "scheduler": dask_processes.address, "request": request(synthetic_url)}
    proc = subprocess.Popen(
        [sys.executable, "-m", ENGINE_PROC, json.dumps(args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        job_id = proc.stdout.readline().strip()
        assert len(job_id) == 16, "the engine process did not start a job"
        registry = JobRegistry(tmp_path / "jobs.sqlite")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and registry.get(job_id).done < 10:
            time.sleep(0.02)
        before = registry.get(job_id)
        assert before.status == "running" and 10 <= before.done < before.total
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert registry.get(job_id).status == "running"  # not lost, not falsely done
    engine = helpers.make_engine(tmp_path, scheduler=dask_processes.address).start()
    try:
        rec = engine.wait(job_id, timeout=240)
        assert rec.attempts == 2
        assert zarr_sum(rec) == clean_sum
        left = [n for n in engine.scratch.list(job_id) if n.startswith((".parts", ".work"))]
        assert not left, f"working entries left in the finished job's scratch: {left}"
    finally:
        engine.stop()


def test_job_finalized_before_a_crash_is_recorded_done_without_rerunning(
    dask_processes, synthetic_url, tmp_path, helpers
):
    # The service died after the finalizer wrote the manifest and the clean-up ran, before the registry
    # said done: the restart must record it done from the manifest, not run the job again.
    req = request(synthetic_url) | {"variables": ["pressure"], "time_indices": [0, 1], "formats": ["hdf5"]}
    engine = helpers.make_engine(tmp_path, scheduler=dask_processes.address).start()
    try:
        first = engine.wait(engine.submit("tokF", req).id, timeout=120)
    finally:
        engine.stop()
    assert first.status == "done" and first.attempts == 1, first.error
    with sqlite3.connect(tmp_path / "jobs.sqlite") as db:
        db.execute("UPDATE jobs SET status='running', files='[]' WHERE id=?", (first.id,))
    assert JobRegistry(tmp_path / "jobs.sqlite").get(first.id).status == "running"
    engine = helpers.make_engine(tmp_path, scheduler=dask_processes.address).start()
    try:
        again = engine.wait(first.id, timeout=60)
        names = engine.scratch.list(first.id)
    finally:
        engine.stop()
    assert again.status == "done" and again.attempts == 1  # no new attempt ran a task
    assert again.files == first.files
    assert names == ["cutout.h5", "cutout.xdmf", "manifest.json"]


def test_cancel_on_the_cluster_stops_workers_within_seconds(cluster_engine, synthetic_url, helpers):
    rec = cluster_engine.submit("tokF", request(synthetic_url))
    helpers.wait_progress(cluster_engine, rec.id, 5)
    t0 = time.monotonic()
    cluster_engine.cancel("tokF", rec.id, timeout=10)
    deadline = t0 + 5
    while True:
        running = cluster_engine.client.run(executing_keys)
        if not any(rec.id in k for keys in running.values() for k in keys):
            break
        assert time.monotonic() < deadline, f"workers still run tasks of the cancelled job: {running}"
        time.sleep(0.1)
    time.sleep(1.0)
    assert cluster_engine.scratch.list(rec.id) == []
    assert cluster_engine.registry.get(rec.id).status == "cancelled"
