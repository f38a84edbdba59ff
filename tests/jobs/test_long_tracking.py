"""Particles jobs past the tracking library's per-call limit: a long run goes in time windows that resume."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

import labservice
from labservice.errors import LimitExceeded
from labservice.interpolation import tracking
from labservice.interpolation.tracking import TrackState, advect, segments
from labservice.jobs import KINDS, Scratch, parse_request
from labservice.jobs.kinds import JobContext
from labservice.storage import create_store
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable


def wall_velocity(x, y, z, t=0.0):
    """Upward flow with a sideways swirl: particles near the top wall leave it at different times."""
    return np.stack(
        np.broadcast_arrays(0.5 * np.sin(y) + 0.0 * z, 0.5 * np.cos(x) + t, 1.0 + 0.2 * np.sin(x) + 0.0 * z),
        axis=-1,
    )


def build_wall(url: str, n: int = 16) -> None:
    """Periodic x, y (2 pi), a wall-bounded z in [0, 1], velocity at 3 times."""
    side = Axis(size=n, periodic=True, start=0.0, step=2 * np.pi / n)
    wall = Axis(size=n, periodic=False, start=0.0, step=1.0 / (n - 1))
    meta = DatasetMeta(
        id="wall",
        title="wall-bounded drift",
        grid=Grid(x=side, y=side, z=wall),
        times=[0.0, 0.1, 0.2],
        variables={"velocity": Variable(components=["ux", "uy", "uz"])},
        chunks=(8, 8, 8),
        shards=(16, 16, 16),
    )
    store = create_store(url, meta, backend="zarr", overwrite=True)
    for ti, t in enumerate(meta.times):
        z, y, x = np.meshgrid(wall.coords(), side.coords(), side.coords(), indexing="ij")
        store.write_box("velocity", ti, 0, 0, 0, wall_velocity(x, y, z, t).astype(np.float32))
    store.close()


@pytest.fixture(scope="module")
def wall_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("wall") / "wall.zarr")
    build_wall(url)
    return url


def test_windows_give_the_same_run_bit_for_bit():
    def velocity(p: np.ndarray, t: float) -> np.ndarray:
        return wall_velocity(p[:, 0], p[:, 1], p[:, 2], t)

    def inside(p: np.ndarray) -> np.ndarray:
        return (p[:, 2] >= 0.0) & (p[:, 2] <= 1.0)

    pts = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 0.95], [3.0, 0.5, 0.99], [5.0, 4.0, 0.6], [2.0, 2.0, 1.5]])
    args = (velocity, inside, pts, 0.0, 0.35, 0.001)
    whole = advect(*args, scheme="rk4", every=0.01)
    windows = segments(0.0, 0.35, 0.001, max_steps=64)
    assert len(windows) == 6 and windows[-1] == (320, 350)
    state, times, frames = None, [], []
    for w in windows:
        part = advect(*args, scheme="rk4", every=0.01, steps=w, state=state)
        state = TrackState(part.positions, part.left_domain, part.stop_time)
        times.append(part.times)
        frames.append(part.trajectory)
    # Some particles stop at the wall mid-run, one starts outside, the others keep moving.
    assert whole.left_domain.tolist() == [False, True, True, False, True]
    assert 0.0 < whole.stop_time[1] < whole.stop_time[0] == 0.35
    np.testing.assert_array_equal(state.positions, whole.positions)
    np.testing.assert_array_equal(state.left_domain, whole.left_domain)
    np.testing.assert_array_equal(state.stop_time, whole.stop_time)
    np.testing.assert_array_equal(np.concatenate(times), whole.times)
    np.testing.assert_array_equal(np.concatenate(frames), whole.trajectory)
    with pytest.raises(LimitExceeded, match="at most"):
        tracking.step_times(0.0, 2.0, 1e-6)


@pytest.mark.dask
def test_a_particles_job_over_a_million_steps_matches_an_in_process_run(engine, wall_url, monkeypatch):
    # 1,000,100 steps: over the library's 10^6 per call, so the job runs two windows. The particles start
    # just below the wall and stop there within a few hundred steps; the rest of the run costs nothing.
    pts = np.array([[0.3, 0.2, 1 - 2e-6], [1.0, 2.0, 1 - 6e-6], [2.5, 4.0, 1 - 1.2e-5], [4.0, 5.5, 1 - 3e-5]])
    dt = 0.1 / 1_000_100
    req = {"kind": "particles", "dataset": wall_url, "t_start": 0.0, "t_end": 0.1, "dt": dt}
    req |= {"spatial": "none", "temporal": "none"}
    assert tracking.count_steps(0.0, 0.1, dt) == 1_000_100 > tracking.MAX_STEPS
    t0 = time.monotonic()
    rec = engine.wait(engine.submit("tokT", req, points=pts).id, timeout=300)
    took = time.monotonic() - t0
    assert rec.status == "done", rec.error
    got = np.load(engine.scratch.path(rec.id, "particles.npy"))
    # In process, with the library's limit lifted: one call over every step, no windows.
    monkeypatch.setattr(tracking, "MAX_STEPS", 2_000_000)
    ds = labservice.open_dataset(wall_url)
    whole = ds.track(pts, 0.0, 0.1, dt, spatial="none", temporal="none")
    assert whole.left_domain.all() and (whole.positions[:, 2] > pts[:, 2]).all()
    np.testing.assert_array_equal(got, whole.positions)
    assert took < 120, f"the job took {took:.0f} s"


@pytest.mark.dask
def test_windows_of_a_job_carry_moving_particles(engine, synthetic_url, tmp_path, helpers):
    """Windows of 40 steps on a 100-step run, with outputs every 25 steps: same trajectory as one call."""
    short = helpers.make_engine(tmp_path, scheduler=engine.cluster.scheduler_address, track_segment_steps=40)
    pts = np.random.default_rng(3).uniform(0, 2 * np.pi, size=(30, 3))
    ds = labservice.open_dataset(synthetic_url)
    expect = ds.track(pts, 0.0, 0.2, 0.002, every=0.05)
    req = {"kind": "particles", "dataset": synthetic_url, "t_start": 0.0, "t_end": 0.2, "dt": 0.002, "every": 0.05}
    with short:
        rec = short.wait(short.submit("tokW", req, points=pts).id, timeout=300)
        assert rec.status == "done", rec.error
        got = np.load(short.scratch.path(rec.id, "particles.npy"))
    assert got.shape == (5, 30, 3) and np.abs(got[-1] - pts).max() > 0.01
    np.testing.assert_array_equal(got, expect.trajectory)


def test_a_retried_part_resumes_after_its_last_saved_window(synthetic_url, tmp_path):
    scratch = Scratch(str(tmp_path / "scratch"))
    ctx = JobContext(scratch=scratch, resolve_dataset=lambda d: (d, None), track_segment_steps=40)
    kind, job = KINDS["particles"], "0123456789abcdef"
    req = parse_request(
        {"kind": "particles", "dataset": synthetic_url, "t_start": 0.0, "t_end": 0.2, "dt": 0.002}
    )
    pts = np.random.default_rng(4).uniform(0, 2 * np.pi, size=(6, 3))
    kind.accept(ctx, job, req, pts)
    plan = kind.plan(ctx, job, req)
    (spec,) = plan.parts
    assert spec["segments"] == [[0, 40], [40, 80], [80, 100]]
    kind.run_part(spec)
    saved = ".parts/000000.s001.npz"
    assert scratch.exists(job, saved)
    # A crash after window 1 was saved: no part record. Shift the saved positions to see them used.
    scratch.delete(job, ".parts/000000.json")
    with np.load(io.BytesIO(scratch.read_bytes(job, saved))) as z:
        state = TrackState(z["positions"] + 0.01, z["left_domain"], z["stop_time"])
    buf = io.BytesIO()
    np.savez(buf, positions=state.positions, left_domain=state.left_domain, stop_time=state.stop_time)
    scratch.put_bytes(job, saved, buf.getvalue())
    kind.run_part(spec)
    got = np.load(io.BytesIO(scratch.read_bytes(job, ".parts/000000.npy")))
    ds = labservice.open_dataset(synthetic_url)
    order = np.frombuffer(scratch.read_bytes(job, ".work/order.i64"), np.int64)
    expect = ds.track(pts[order], 0.0, 0.2, 0.002, steps=(80, 100), state=state).positions
    np.testing.assert_array_equal(got, expect)
    assert np.abs(got - ds.track(pts[order], 0.0, 0.2, 0.002).positions).max() > 0.005
