"""Job outputs on a real SeaweedFS S3 server, including a server restart in the middle of a job."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import xarray as xr
import zarr

from tests.plugin.s3 import SeaweedS3

pytestmark = [pytest.mark.dask, pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator:
    server = SeaweedS3(tmp_path_factory.mktemp("weed-jobs"))  # our own: the tests restart it
    try:
        yield server.start("jobs")
    finally:
        server.stop()


def restart(server) -> None:
    """Stop the S3 server and start it again on the same ports and data."""
    server.stop()
    time.sleep(1.0)
    server.spawn()


@pytest.fixture(scope="module")
def s3_engine(s3, engine, tmp_path_factory, helpers) -> Iterator:
    eng = helpers.make_engine(
        tmp_path_factory.mktemp("s3-jobs"),
        scratch="s3://jobs/scratch",
        scratch_options=s3.storage_options,
        scheduler=engine.cluster.scheduler_address,
    )
    eng.start()
    try:
        yield eng
    finally:
        eng.stop()


def verify(eng, rec) -> None:
    """Every object of a done job matches the checksum the job recorded."""
    manifest = __import__("json").loads(eng.scratch.read_bytes(rec.id, "manifest.json"))
    for obj in manifest["objects"]:
        assert eng.scratch.checksum(rec.id, obj["name"]).sha256 == obj["sha256"], obj["name"]
    for f in rec.files:
        if f["format"] != "zarr":
            assert eng.scratch.checksum(rec.id, f["name"]).sha256 == f["sha256"]


def test_cutout_to_s3_is_readable_with_xarray(s3_engine, s3, synthetic_url, helpers):
    req = {
        "kind": "cutout",
        "dataset": synthetic_url,
        "variables": ["velocity"],
        "time_indices": [1],
        "x": [0, 40],
        "y": [0, 40],
        "z": [0, 20],
        "formats": ["zarr", "hdf5"],
    }
    rec = s3_engine.wait(s3_engine.submit("tokS", req).id, timeout=180)
    assert rec.status == "done", rec.error
    verify(s3_engine, rec)
    store = zarr.storage.FsspecStore.from_url(
        s3_engine.scratch.job_url(rec.id, "cutout.zarr"), storage_options=s3.storage_options, read_only=True
    )
    ds = xr.open_zarr(store, consolidated=True)
    import numpy as np

    z, y, x = np.meshgrid(ds.z.values, ds.y.values, ds.x.values, indexing="ij")
    np.testing.assert_allclose(ds.velocity[0].values, helpers.field_value(x, y, z, 0.1), atol=2e-6)


def test_s3_restart_mid_job_never_gives_a_corrupt_done(s3_engine, s3, synthetic_url, helpers):
    req = {"kind": "cutout", "dataset": synthetic_url, "variables": ["velocity"], "time_indices": [0, 2]}
    rec = s3_engine.submit("tokS", req)
    helpers.wait_progress(s3_engine, rec.id, 5, timeout=120)
    restart(s3)
    s3.wait_ready("jobs")
    out = s3_engine.wait(rec.id, timeout=400)
    print(f"after the S3 restart the job ended {out.status} ({out.done}/{out.total}) {out.error or ''}")
    if out.status == "done":
        assert out.done == out.total
        verify(s3_engine, out)
    else:  # allowed, but only with a clear reason
        assert out.status == "failed" and "StorageUnavailable" in out.error, out.error
