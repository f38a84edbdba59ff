"""The branch-cutout job kind on a real Dask cluster behind a real server: same nodes as the synchronous answer."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from labclient import InvalidRequest, Lab, NotFoundError
from labclient.cosmology import read_branch_cutout
from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.jobs import JobEngine
from labservice.jobs.kinds.branch import simulation_resolver
from labservice.limits import Limits
from labservice.routers import jobs as jobs_router
from labservice.settings import Settings
from labservice.tokens import TokenStore
from tests.plugin.cosmo import SIM

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def job_lab(sim_dir, tmp_path_factory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("branch-jobs")
    engine = JobEngine(
        root / "jobs.sqlite",
        str(root / "scratch"),
        n_workers=1,
        resolve_simulation=simulation_resolver(sim_dir.parent),
    ).start()
    token = TokenStore(root / "tokens.sqlite").create(
        "cosmologist",
        Limits(
            jobs_allowed=True,
            max_cutout_bytes=1 << 20,
            requests_per_minute=100_000,
            max_job_bytes=64 << 20,
            scratch_bytes=256 << 20,
            max_running_jobs=2,
        ),
    )[1]
    app = create_app(Settings(data_dir=sim_dir.parent, token_db=root / "tokens.sqlite"))
    if not any(getattr(r, "path", "") == "/api/v1/jobs" for r in app.routes):
        app.include_router(jobs_router.router, prefix="/api/v1")
    app.state.jobs = engine
    try:
        with ServerThread(app) as server, Lab(server.url, token=token, retries=0) as lab:
            yield lab
    finally:
        engine.stop()


def test_job_result_equals_synchronous_nodes(job_lab, local, tmp_path):
    z0 = local.halos[local.halos["snap"] == local.halos["snap"].max()]
    hid = int(z0.loc[(z0["mainLeafId"] - z0["id"]).idxmax(), "id"])
    halo = job_lab.dataset(SIM).halo(hid)
    job = halo.branch_cutout(radius=1.5, units="mpc", job=True)
    assert job.wait(progress=False, timeout=120).state == "done"
    assert [f["name"] for f in job.files()][0] == "branch_cutout.hdf5"
    got = read_branch_cutout(job.download(tmp_path, "branch_cutout.hdf5"))
    want = halo.branch_cutout(radius=1.5, units="mpc")
    assert got["halo_id"] == hid and got["units"] == "mpc" and got["count"] == want["count"] > 0
    assert len(got["nodes"]) == len(want["nodes"]) == len(local.tree(hid, "main-branch")) >= 2
    for g, w in zip(got["nodes"], want["nodes"], strict=True):
        assert g["snap"] == w["snap"] and g["halo"]["id"] == w["halo"]["id"]
        for f in ("Coordinates", "Velocities", "ParticleIDs", "Offsets"):
            np.testing.assert_array_equal(g[f], w[f], err_msg=f)
        np.testing.assert_allclose(g["centre"], w["centre"])


def test_bad_job_requests_fail_at_submission(job_lab):
    sim = job_lab.dataset(SIM)
    with pytest.raises(NotFoundError):
        sim.halo(99_999_999).branch_cutout(radius=2, units="mpc", job=True)
    with pytest.raises(InvalidRequest, match="Masses"):
        sim.halo(0).branch_cutout(radius=2, units="mpc", fields=["Masses"], job=True)
    with pytest.raises(NotFoundError, match=SIM):
        job_lab.dataset(SIM).lab.transport.call(
            "POST", "/api/v1/jobs", body={"kind": "branch-cutout", "dataset": SIM + "x", "halo_id": 0}
        )
