"""Faults on real parts: SeaweedFS stopped mid-service, corrupted chunk bytes, a full scratch disk during a
job, and the server process killed with SIGKILL and restarted.

Worker SIGKILL, engine kill and cancel mid-job are covered by tests/jobs/test_faults.py, an unreachable
S3 endpoint at open time by tests/storage/test_unavailable.py.
"""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from labservice import open_dataset
from labservice.app import create_app
from labservice.devserver import ServeProcess, ServerThread
from labservice.jobs import JobEngine
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore
from tests.plugin.grids import analytic_velocity, build_box
from tests.plugin.s3 import SeaweedS3

pytestmark = pytest.mark.slow

POINTS = np.random.default_rng(3).uniform(0, 2 * np.pi, (64, 3))


def _points_body(time: float = 0.0) -> dict:
    return {"variable": "velocity", "points": POINTS.tolist(), "time": time, "spatial": "lag4"}


@pytest.mark.s3
def test_s3_stopped_gives_503_with_retry_after_then_recovers(tmp_path: Path) -> None:
    weed = SeaweedS3(tmp_path / "weed", fail_fast=True)
    weed.start("hard")
    try:
        url = "s3://hard/s3box.zarr"
        build_box(url, n=32, nt=2, chunk=16, shard=32, storage_options=weed.storage_options)
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(
            yaml.safe_dump([{"id": "s3box", "url": url, "storage_options": weed.storage_options}])
        )
        # No chunk cache: every query reads the store, so the outage is seen at once.
        settings = Settings(catalog=catalog, cache_bytes=0, token_db=tmp_path / "tokens.sqlite")
        with (
            ServerThread(create_app(settings)) as server,
            httpx.Client(base_url=server.url, timeout=60) as http,
        ):
            path = "/api/v1/datasets/s3box/points"
            before = http.post(path, json=_points_body())
            assert before.status_code == 200, before.text
            np.testing.assert_allclose(before.json()["values"], analytic_velocity(POINTS, 0.0), atol=2e-2)

            weed.stop()
            down = http.post(path, json=_points_body())
            assert down.status_code == 503, down.text
            assert int(down.headers["Retry-After"]) >= 1
            assert down.json()["code"] == "storage_unavailable"
            assert "cannot reach the store" in down.json()["detail"]

            weed.start("hard")
            after = http.post(path, json=_points_body())
            assert after.status_code == 200, after.text
            assert after.json()["values"] == before.json()["values"]
    finally:
        weed.stop()


def test_corrupt_chunk_is_refused_naming_dataset_and_chunk(tmp_path: Path) -> None:
    url = tmp_path / "corrupt.zarr"
    build_box(str(url), n=32, nt=1, chunk=16, shard=32)
    shard = next(p for p in sorted((url / "velocity").rglob("*")) if p.is_file() and p.stat().st_size > 4096)
    raw = bytearray(shard.read_bytes())
    raw[100:108] = bytes(b ^ 0xFF for b in raw[100:108])  # inside the first inner chunk's data
    shard.write_bytes(bytes(raw))
    settings = Settings(datasets={"corrupt": str(url)}, token_db=tmp_path / "tokens.sqlite", cache_bytes=0)
    with ServerThread(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.post("/api/v1/datasets/corrupt/points", json=_points_body())
        assert response.status_code == 500, response.text[:300]
        body = response.json()
        assert body["code"] == "corrupt_data"
        assert "'corrupt'" in body["detail"] and "inner chunk (iz, iy, ix)=" in body["detail"]
        assert body["dataset"] == "corrupt" and body["variable"] == "velocity" and len(body["chunk"]) == 3
        # A streamed cutout either fails before it starts, or is cut off without its closing chunk, so no
        # client can take a truncated file for a whole one.
        params = {"variable": "velocity", "time": 0, "format": "npy"}
        try:
            cut = http.get("/api/v1/datasets/corrupt/cutout", params=params)
        except httpx.RemoteProtocolError:
            pass
        else:
            assert cut.status_code == 500 and cut.json()["code"] == "corrupt_data", cut.status_code
        # The undamaged half of the box is still served.
        fine = http.get(
            "/api/v1/datasets/corrupt/cutout",
            params={"variable": "velocity", "time": 0, "format": "npy", "z": "16:32"},
        )
        assert fine.status_code == 200


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 1 MiB tmpfs (we run as root in the test machines): a scratch disk that fills up."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.dask
def test_full_scratch_disk_fails_the_job_with_the_reason(tmp_path: Path, small_tmpfs: Path) -> None:
    url = str(tmp_path / "box.zarr")
    build_box(url, n=64, nt=1)
    engine = JobEngine(tmp_path / "jobs.sqlite", str(small_tmpfs), n_workers=1, retries=0, shard_edge=32)
    with engine:
        rec = engine.submit(
            "owner", {"kind": "cutout", "dataset": url, "variable": "velocity", "formats": ["zarr"]}
        )
        done = engine.wait(rec.id, timeout=120)
        assert done.status == "failed", done.error
        assert "No space left on device" in done.error or "ENOSPC" in done.error, done.error
        assert done.files == []
        leftovers = engine.scratch.list(rec.id)
        assert not any(name.endswith("manifest.json") for name in leftovers), leftovers
    assert sum(f.stat().st_size for f in small_tmpfs.rglob("*") if f.is_file()) < 64 << 10  # cleaned up


@pytest.mark.dask
def test_server_sigkill_and_restart_loses_no_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    build_box(str(data / "box.zarr"), n=32, nt=3, chunk=16, shard=32)
    _, token = TokenStore(tmp_path / "tokens.sqlite").create(
        "kill", Limits(points_per_request=10_000, jobs_allowed=True, max_running_jobs=4,
                       scratch_bytes=1 << 30, max_job_bytes=1 << 28)
    )  # fmt: skip
    env = {
        "LABSERVICE_TOKEN_DB": str(tmp_path / "tokens.sqlite"),
        "LABSERVICE_SCRATCH_URL": str(tmp_path / "scratch"),
    }
    start = np.random.default_rng(5).uniform(0, 2 * np.pi, (300, 3))
    request = {"kind": "particles", "dataset": "box", "t_start": 0.0, "t_end": 2.0, "dt": 0.004,
               "points": start.tolist()}  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    server = ServeProcess(data, env, tmp_path / "serve1.log")
    try:
        server.wait_ready()
        submitted = httpx.post(f"{server.url}/api/v1/jobs", json=request, headers=auth, timeout=60)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=auth, timeout=30).json()[
                "status"
            ]
            if status != "queued":
                break
            time.sleep(0.05)
        assert status == "running"  # killed mid-job
    finally:
        server.kill()

    server = ServeProcess(data, env, tmp_path / "serve2.log")
    try:
        server.wait_ready()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=auth, timeout=30).json()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.5)
        assert job["status"] == "done", job
        assert job["attempts"] >= 2  # resumed, not restarted from nothing by a new submission
        npy = httpx.get(f"{server.url}{job['links']['files']['particles.npy']}", headers=auth, timeout=60)
        assert npy.status_code == 200
        final = np.load(io.BytesIO(npy.content), allow_pickle=False)
    finally:
        server.kill()
    ds = open_dataset(str(data / "box.zarr"))
    try:
        expected = ds.track(start, 0.0, 2.0, 0.004).positions
    finally:
        ds.close()
    np.testing.assert_allclose(final, expected, rtol=0, atol=1e-9)
    assert f"resuming job {job_id}" in (tmp_path / "serve2.log").read_text()
