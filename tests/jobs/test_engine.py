"""Jobs on an embedded LocalCluster (2 worker processes): results, cancel, quotas, expiry."""

from __future__ import annotations

import threading
import time

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr

import labservice
from labservice.errors import Forbidden, LimitExceeded, NotFound, QuotaExceeded
from labservice.jobs import JobLimits
from labservice.jobs.parts import executing_keys

pytestmark = pytest.mark.dask


def test_cutout_job_is_exact_in_every_format(engine, synthetic_url, helpers):
    req = {
        "kind": "cutout",
        "dataset": synthetic_url,
        "variables": ["velocity", "pressure"],
        "time_indices": [0, 2],
        "x": [0, 64, 3],
        "y": [-5, 30, 1],
        "z": [10, 41, 2],
        "formats": ["zarr", "hdf5", "netcdf"],
    }
    rec = engine.wait(engine.submit("tokA", req).id, timeout=120)
    assert rec.status == "done", rec.error
    assert rec.done == rec.total > 1
    names = [f["name"] for f in rec.files]
    assert names == ["cutout.zarr", "cutout.h5", "cutout.xdmf", "cutout.nc", "manifest.json"]
    root = engine.scratch.path(rec.id)
    ds = xr.open_zarr(f"{root}/cutout.zarr")
    assert ds.velocity.dims == ("time", "z", "y", "x", "velocity_component")
    assert ds.velocity.shape == (2, 16, 35, 22, 3) and ds.pressure.shape == (2, 16, 35, 22, 1)
    h = 2 * np.pi / 64
    np.testing.assert_allclose(ds.y.values, (np.arange(-5, 30)) * h)  # wrapped points keep increasing
    z, y, x = np.meshgrid(ds.z.values, ds.y.values, ds.x.values, indexing="ij")
    for k, t in enumerate([0.0, 0.2]):
        np.testing.assert_allclose(ds.velocity[k].values, helpers.field_value(x, y, z, t), atol=2e-6)
        np.testing.assert_allclose(ds.pressure[k].values, helpers.pressure_value(x, y, z, t), atol=2e-6)
    with h5py.File(f"{root}/cutout.h5") as f:
        np.testing.assert_array_equal(f["velocity"][...], ds.velocity.values)
        np.testing.assert_array_equal(f["x"][...], ds.x.values)
    with netCDF4.Dataset(f"{root}/cutout.nc") as nc:
        np.testing.assert_array_equal(nc["pressure"][...], ds.pressure.values)
    xdmf = engine.scratch.read_bytes(rec.id, "cutout.xdmf").decode()
    assert "cutout.h5:/velocity" in xdmf and xdmf.count('<Grid Name="t') == 2
    # Every listed checksum matches the bytes stored; the working parts are gone.
    for f in rec.files:
        if f["name"] != "cutout.zarr":
            assert engine.scratch.checksum(rec.id, f["name"]).sha256 == f["sha256"]
    assert not any(n.startswith((".parts", ".work")) for n in engine.scratch.list(rec.id))


def test_points_and_particles_jobs_match_in_process_queries(engine, synthetic_url):
    rng = np.random.default_rng(5)
    pts = rng.uniform(0, 2 * np.pi, size=(5000, 3))
    ds = labservice.open_dataset(synthetic_url)
    series = {
        "kind": "points",
        "dataset": synthetic_url,
        "variable": "velocity",
        "times": [0.0, 0.2, 0.05],
        "spatial": "lag4",
        "temporal": "pchip",
        "operator": "gradient",
    }
    single = {"kind": "points", "dataset": synthetic_url, "variable": "pressure", "time": 0.1}
    track = {
        "kind": "particles",
        "dataset": synthetic_url,
        "t_start": 0.0,
        "t_end": 0.2,
        "dt": 0.05,
        "every": 0.1,
    }
    # In-process answers first: this also fills numba's on-disk cache, so workers load the kernels
    # instead of compiling them again (a cold compile takes minutes on a busy 2-core machine).
    expect_series = ds.points("velocity", pts, times=(0.0, 0.2, 0.05), temporal="pchip", operator="gradient")
    expect_single = ds.points("pressure", pts, time=0.1)
    expect_track = ds.track(pts[:600], 0.0, 0.2, 0.05, every=0.1).trajectory
    ids = [
        engine.submit("tokP", r, points=p).id for r, p in ((series, pts), (single, pts), (track, pts[:600]))
    ]
    recs = [engine.wait(i, timeout=300) for i in ids]
    assert [r.status for r in recs] == ["done"] * 3, [r.error for r in recs]
    assert recs[0].total > 1
    got = [np.load(engine.scratch.path(r.id, f"{r.kind}.npy")) for r in recs]
    assert got[0].shape == (5, 5000, 3, 3)
    np.testing.assert_array_equal(got[0], expect_series)
    np.testing.assert_array_equal(got[1], expect_single)
    np.testing.assert_array_equal(got[2], expect_track)


def test_cancel_stops_workers_and_leaves_nothing(engine, synthetic_url, helpers):
    req = {
        "kind": "cutout",
        "dataset": synthetic_url,
        "variables": ["velocity", "pressure"],
        "time_indices": [0, 1, 2],
    }
    rec = engine.submit("tokC", req)
    helpers.wait_progress(engine, rec.id, 3)
    t0 = time.monotonic()
    out = engine.cancel("tokC", rec.id, timeout=10)
    took = time.monotonic() - t0
    assert out.status == "cancelled" and took < 10
    running = engine.client.run(executing_keys)
    assert not any(rec.id in k for keys in running.values() for k in keys), running
    assert engine.scratch.list(rec.id) == []
    time.sleep(1.0)  # nothing shows up later either (no straggler writes)
    assert engine.scratch.list(rec.id) == []
    assert engine.registry.get(rec.id).status == "cancelled"


def test_a_job_reaches_the_scheduler_as_one_graph(engine, synthetic_url):
    # The scheduler takes in submitted graphs one message at a time, in order, and a cancel waits behind
    # them: parts submitted one by one left CI's cancel queued while hundreds of parts still ran.
    def graphs() -> int:
        events = engine.client.get_events(engine.client.id)
        return sum(1 for _, msg in events if msg.get("action") == "update-graph")

    before = graphs()
    req = {"kind": "cutout", "dataset": synthetic_url, "variables": ["pressure"], "time_indices": [0, 1]}
    rec = engine.wait(engine.submit("tokG", req).id, timeout=120)
    assert rec.status == "done" and rec.total > 20, rec
    assert graphs() - before == 2  # the parts, then the finalizer


def test_twenty_jobs_from_four_tokens_respect_quotas_and_privacy(engine, synthetic_url):
    limits = JobLimits(max_running_jobs=2, scratch_bytes=10 << 20, max_job_bytes=8 << 20)
    req = {
        "kind": "cutout",
        "dataset": synthetic_url,
        "variables": ["pressure"],
        "x": [0, 32],
        "y": [0, 32],
        "z": [0, 32],
    }
    outcome: dict[str, list] = {f"tok{i}": [] for i in range(4)}
    lock = threading.Lock()

    def submit(token):
        try:
            r = engine.submit(token, req, limits=limits)
            res = ("ok", r.id)
        except QuotaExceeded as exc:
            res = ("quota", exc.message)
        with lock:
            outcome[token].append(res)

    threads = [threading.Thread(target=submit, args=(f"tok{i % 4}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for token, results in outcome.items():
        assert len(results) == 5
        ids = [v for k, v in results if k == "ok"]
        assert ids, f"{token} got no job through"
        for k, v in results:
            if k == "quota":
                assert "your limit is 2" in v or "scratch" in v
        recs = [engine.wait(i, timeout=120) for i in ids]
        assert all(r.status == "done" for r in recs)
        # Never more than 2 of a token's jobs were queued or running at once.
        for r in recs:
            overlapping = [o for o in recs if o.created <= r.created and (o.finished or 1e18) > r.created]
            assert len(overlapping) <= 2
        assert {r.id for r in engine.list(token) if r.status == "done"} >= set(ids)
        other = f"tok{(int(token[-1]) + 1) % 4}"
        for i in ids:
            with pytest.raises(NotFound):
                engine.get(other, i)
            with pytest.raises(NotFound):
                engine.file_entry(other, i, "cutout.zarr/zarr.json")
            assert i not in {r.id for r in engine.list(other)}
    with pytest.raises(LimitExceeded, match="job size cap"):
        engine.submit(
            "tok0",
            {**req, "x": None, "y": None, "z": None, "time_indices": [0, 1, 2]},
            limits=JobLimits(max_job_bytes=1 << 20),
        )
    with pytest.raises(Forbidden):
        engine.submit(None, req)


def test_expired_results_are_deleted(engine, synthetic_url):
    req = {
        "kind": "cutout",
        "dataset": synthetic_url,
        "variables": ["pressure"],
        "x": [0, 16],
        "y": [0, 16],
        "z": [0, 16],
        "formats": ["netcdf"],
    }
    rec = engine.wait(engine.submit("tokE", req).id, timeout=60)
    assert rec.status == "done" and engine.file_entry("tokE", rec.id, "cutout.nc")["size"] > 0
    assert rec.id not in engine.sweep(now=rec.expires - 1)
    assert rec.id in engine.sweep(now=rec.expires + 1)
    assert engine.registry.get(rec.id).status == "expired"
    assert engine.scratch.list(rec.id) == []
    with pytest.raises(NotFound, match="expired"):
        engine.file_entry("tokE", rec.id, "cutout.nc")


def test_aligned_cutout_takes_source_chunks_directly(engine, synthetic_url, tmp_path, helpers):
    # Output chunks equal to the source's 16^3 chunks: whole chunks are copied without reassembly; the last
    # z block ends off a chunk boundary and the x range wraps, so both reading paths meet in one job.
    aligned = helpers.make_engine(
        tmp_path, scheduler=engine.cluster.scheduler_address, shard_edge=32, chunk_edge=16
    )
    aligned.start()
    try:
        req = {
            "kind": "cutout",
            "dataset": synthetic_url,
            "variables": ["velocity"],
            "time_indices": [1],
            "x": [16, 80],
            "y": [0, 48],
            "z": [0, 40],
        }
        rec = aligned.wait(aligned.submit("tokA", req).id, timeout=120)
        assert rec.status == "done", rec.error
        ds = xr.open_zarr(aligned.scratch.path(rec.id, "cutout.zarr"))
        ref = labservice.open_dataset(synthetic_url).cutout(
            "velocity", time=0.1, x=(16, 80, 1), y=(0, 48, 1), z=(0, 40, 1)
        )
        np.testing.assert_array_equal(ds.velocity[0].values, ref.data)
    finally:
        aligned.stop()
