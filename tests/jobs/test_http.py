"""The jobs API over a real uvicorn server, driven by the labclient Job class."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

import labservice
from labclient import AuthError, Lab, NotFoundError
from labclient.jobs import Job, list_jobs, submit_job
from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.errors import NotFound
from labservice.limits import Limits
from labservice.routers import jobs as jobs_router
from labservice.settings import Settings
from labservice.tokens import TokenStore

pytestmark = pytest.mark.dask

JOB_LIMITS = dict(
    points_per_request=10_000,
    requests_per_minute=100_000,
    max_concurrent=64,
    jobs_allowed=True,
    scratch_bytes=64 << 20,
    max_job_bytes=32 << 20,
)


@pytest.fixture(scope="module")
def service(engine, synthetic_url, tmp_path_factory, helpers) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("http-jobs")
    settings = Settings(datasets={"synthetic": synthetic_url}, token_db=root / "tokens.sqlite")
    store = TokenStore(root / "tokens.sqlite")
    tokens = {
        name: store.create(name, Limits(max_running_jobs=n, **JOB_LIMITS))[1]
        for name, n in (("alice", 4), ("bob", 4), ("carol", 1))
    }

    def resolve(dataset_id: str):
        if dataset_id != "synthetic":
            raise NotFound(f"unknown dataset {dataset_id!r}")
        return synthetic_url, None

    # A second engine on the session's cluster, with its own registry and scratch, resolving ids.
    jobs = helpers.make_engine(
        root, scheduler=engine.cluster.scheduler_address, resolve_dataset=resolve
    ).start()
    app = create_app(settings)
    if not any(getattr(r, "path", "") == "/api/v1/jobs" for r in app.routes):
        app.include_router(jobs_router.router, prefix="/api/v1")
    app.state.jobs = jobs
    with ServerThread(app) as server:
        yield {"url": server.url, "tokens": tokens, "engine": jobs}
    jobs.stop()


def lab(service, who: str | None) -> Lab:
    return Lab(service["url"], token=service["tokens"][who] if who else "", retries=0)


CUTOUT = {
    "kind": "cutout",
    "dataset": "synthetic",
    "variable": "velocity",
    "times": [0.1],
    "x": "0:64:2",
    "y": "-4:20",
    "z": "8:24",
    "formats": ["zarr", "netcdf"],
}


def test_cutout_job_round_trip_with_ranges(service, synthetic_url):
    with lab(service, "alice") as alice, httpx.Client(base_url=service["url"]) as raw:
        auth = {"Authorization": f"Bearer {service['tokens']['alice']}"}
        r = raw.post("/api/v1/jobs", json=CUTOUT, headers=auth)
        assert r.status_code == 202 and r.headers["location"] == f"/api/v1/jobs/{r.json()['id']}"
        assert r.json()["status"] == "queued"
        job = Job(alice, r.json()["id"]).wait(progress=True, timeout=120)
        ds = job.result()
        ref = labservice.open_dataset(synthetic_url).cutout(
            "velocity", time=0.1, x=(0, 64, 2), y=(-4, 20, 1), z=(8, 24, 1)
        )
        np.testing.assert_array_equal(ds.velocity[0].values, ref.data)
        info = job.status()
        assert info["progress"] == {
            "fraction": 1.0,
            "done": info["progress"]["total"],
            "total": info["progress"]["total"],
        }
        assert info["expires"] > info["finished"]
        nc = next(f for f in info["files"] if f["name"] == "cutout.nc")
        url = f"/api/v1/jobs/{job.id}/files/cutout.nc"
        whole = raw.get(url, headers=auth)
        assert whole.status_code == 200 and len(whole.content) == nc["size"]
        part = raw.get(url, headers=auth | {"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{nc['size']}"
        tail = raw.get(url, headers=auth | {"Range": "bytes=-7"})
        assert tail.status_code == 206 and tail.content == whole.content[-7:]
        bad = raw.get(url, headers=auth | {"Range": f"bytes={nc['size']}-"})
        assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{nc['size']}"
        # Nobody else sees the job or its files; public callers cannot submit.
        with lab(service, "bob") as bob:
            with pytest.raises(NotFoundError):
                Job(bob, job.id).status()
            with pytest.raises(NotFoundError):
                Job(bob, job.id).download("/tmp/never-written")
            with pytest.raises(NotFoundError):
                Job(bob, job.id).cancel()
            assert job.id not in {j.id for j in list_jobs(bob)}
        assert job.id in {j.id for j in list_jobs(alice)}
        public = raw.post("/api/v1/jobs", json=CUTOUT)
        assert public.status_code == 403 and "token" in public.json()["detail"]


def test_points_job_and_quota_and_cancel(service, synthetic_url):
    pts = np.random.default_rng(1).uniform(0, 6.28, size=(3000, 3))
    with lab(service, "alice") as alice, lab(service, "carol") as carol:
        # The in-process answer first: it fills numba's disk cache, which the workers then load.
        expect = labservice.open_dataset(synthetic_url).points(
            "pressure", pts, time=0.05, temporal="linear", operator="gradient"
        )
        job = submit_job(
            alice,
            {
                "kind": "points",
                "dataset": "synthetic",
                "variable": "pressure",
                "time": 0.05,
                "temporal": "linear",
                "operator": "gradient",
            },
            points=pts,
        )
        got = job.wait(progress=False, timeout=300).result()
        np.testing.assert_array_equal(got, expect)
        big = {
            **CUTOUT,
            "variable": None,
            "variables": ["velocity", "pressure"],
            "times": [0.0, 0.1, 0.2],
            "x": None,
            "y": None,
            "z": None,
            "formats": ["zarr"],
        }
        first = submit_job(carol, big)
        with pytest.raises(Exception) as err:  # carol may run one job at a time
            submit_job(carol, CUTOUT)
        assert getattr(err.value, "status", None) == 429 and "your limit is 1" in str(err.value)
        info = first.cancel()
        assert info["status"] == "cancelled"
        with pytest.raises(AuthError):
            submit_job(lab(service, None), CUTOUT)


def test_dataset_methods_submit_jobs(service, synthetic_url):
    """`cutout(wait=False)`, `points(job=True)` and `lab.jobs()`: the notebook path to batch work."""
    pts = np.random.default_rng(2).uniform(0, 6.28, size=(500, 3))
    with lab(service, "bob") as bob:
        ds = bob.dataset("synthetic")
        job = ds.cutout("velocity", time=0.1, x=(0, 32, 4), y=(0, 16), z=(4, 12), wait=False)
        assert isinstance(job, Job)
        assert job.id in {j.id for j in bob.jobs()}
        got = job.wait(progress=False, timeout=120).result()
        ref = ds.cutout("velocity", time=0.1, x=(0, 32, 4), y=(0, 16), z=(4, 12))
        np.testing.assert_array_equal(got.velocity[0].values, ref.velocity.values)
        pjob = ds.points("pressure", pts, time=0.05, job=True)
        np.testing.assert_array_equal(pjob.wait(progress=False, timeout=300).result(), ds.points("pressure", pts, time=0.05))


def test_malformed_range_on_a_job_file_is_416(service):
    auth = {"Authorization": f"Bearer {service['tokens']['bob']}"}
    with lab(service, "bob") as bob, httpx.Client(base_url=service["url"]) as raw:
        job = submit_job(bob, {**CUTOUT, "formats": ["netcdf"]}).wait(progress=False, timeout=120)
        size = next(f["size"] for f in job.status()["files"] if f["name"] == "cutout.nc")
        for header in ("bytes=abc", "items=0-9", "bytes=0-9,20-29", "bytes=9-2"):
            r = raw.get(f"/api/v1/jobs/{job.id}/files/cutout.nc", headers=auth | {"Range": header})
            assert r.status_code == 416, (header, r.text)
            assert r.json()["code"] == "range_not_satisfiable" and repr(header) in r.json()["detail"]
            assert r.headers["content-range"] == f"bytes */{size}"


def test_cutout_job_takes_time_and_format_as_the_synchronous_cutout(service, synthetic_url):
    """`time` and `format`, spelled as GET /cutout spells them; both spellings of one input are a 422."""
    import io

    import h5py

    auth = {"Authorization": f"Bearer {service['tokens']['bob']}"}
    body = {
        "kind": "cutout",
        "dataset": "synthetic",
        "variable": "pressure",
        "time": 0.2,
        "x": "0:16",
        "y": "4:12",
        "z": "0:8:2",
        "format": "hdf5",
    }
    with lab(service, "bob") as bob, httpx.Client(base_url=service["url"]) as raw:
        r = raw.post("/api/v1/jobs", json=body, headers=auth)
        assert r.status_code == 202, r.text
        job = Job(bob, r.json()["id"]).wait(progress=False, timeout=120)
        files = job.status()["files"]
        assert {f["format"] for f in files} == {"hdf5", "json"}  # format: hdf5 alone, no zarr
        h5 = next(f["name"] for f in files if f["name"].endswith(".h5"))
        data = raw.get(f"/api/v1/jobs/{job.id}/files/{h5}", headers=auth).content
        with h5py.File(io.BytesIO(data), "r") as f:
            got = f["pressure"][...]
        ref = labservice.open_dataset(synthetic_url).cutout("pressure", time=0.2, x=(0, 16), y=(4, 12), z=(0, 8, 2))
        assert got.shape[0] == 1
        np.testing.assert_array_equal(got[0], ref.data)
        for extra, word in (({"times": [0.1]}, "'times'"), ({"formats": ["zarr"]}, "'formats'")):
            bad = raw.post("/api/v1/jobs", json=body | extra, headers=auth)
            assert bad.status_code == 422, bad.text
            assert "not both" in bad.json()["detail"] and word in bad.json()["detail"]
        wrong = raw.post("/api/v1/jobs", json=body | {"format": "zip"}, headers=auth)
        assert wrong.status_code == 422 and "format" in wrong.json()["detail"]


@pytest.mark.parametrize("kind", [{"a": 1}, ["cutout"], 3, None, "cutuot"])
def test_a_bad_job_kind_is_422_naming_the_kinds(service, kind):
    auth = {"Authorization": f"Bearer {service['tokens']['bob']}"}
    with httpx.Client(base_url=service["url"]) as raw:
        r = raw.post("/api/v1/jobs", json=CUTOUT | {"kind": kind}, headers=auth)
    assert r.status_code == 422, r.text
    assert "cutout" in r.json()["detail"] and "kind" in r.json()["detail"]
