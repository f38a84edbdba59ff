"""The ``particles`` job kind: particle tracking for up to 10^7 steps, in time segments that resume.

The tracking library takes at most ``tracking.MAX_STEPS`` steps per call, so a long run goes in windows
of steps (:func:`labservice.interpolation.tracking.segments`). A part tracks one batch of particles
through every window, carrying positions, stop flags and stop times from one to the next; after each
window but the last it stores that state (``.parts/<n>.s<k>.npz``), so a retried part continues from its
last finished window. Windows step through the same time levels as one long run, so the result is the
same, bit for bit.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from labservice.errors import InvalidInput, unknown
from labservice.interpolation.tracking import SCHEMES, TrackState, count_steps, segments
from labservice.jobs import parts
from labservice.jobs.kinds.base import JobContext, Plan
from labservice.jobs.kinds.points import PointKind, check_point_query, commit_values, read_points
from labservice.jobs.parts import with_retries
from labservice.requests import ParticlesJobRequest


def _checkpoint(spec: dict[str, Any], k: int) -> str:
    return parts.part_name(spec["part"], f"s{k:03d}.npz")


def _save(spec: dict[str, Any], k: int, state: TrackState, frames: np.ndarray | None) -> None:
    """Store where window ``k`` ended, with its outputs (so a retry resumes after it)."""
    buf = io.BytesIO()
    arrays = {"positions": state.positions, "left_domain": state.left_domain, "stop_time": state.stop_time}
    np.savez(buf, **arrays, **({} if frames is None else {"frames": frames}))
    scratch = parts.scratch_of(spec)
    parts.put_object(scratch, spec["job"], _checkpoint(spec, k), buf.getvalue(), "saving a tracking segment")


def _load(spec: dict[str, Any], k: int) -> tuple[TrackState, np.ndarray | None] | None:
    scratch, job, name = parts.scratch_of(spec), spec["job"], _checkpoint(spec, k)
    if not with_retries(lambda: scratch.exists(job, name), "checking a tracking segment"):
        return None
    raw = with_retries(lambda: scratch.read_bytes(job, name), "reading a tracking segment")
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        state = TrackState(z["positions"], z["left_domain"], z["stop_time"])
        return state, z["frames"] if "frames" in z.files else None


def _resume(spec: dict[str, Any], windows: int) -> tuple[int, TrackState | None, list[np.ndarray]]:
    """The first window still to run, the state it starts from and the outputs of the windows before."""
    for k in range(windows - 2, -1, -1):
        saved = _load(spec, k)
        if saved is not None:
            earlier = [_load(spec, j) for j in range(k)]
            frames = [f for _, f in (*earlier, saved) if f is not None]  # type: ignore[misc]
            return k + 1, saved[0], frames
    return 0, None, []


def run_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Track one batch of particles through every window of steps, resuming after the last saved one."""
    done = parts.committed(parts.scratch_of(spec), spec["job"], spec["part"])
    if done is not None:
        return done
    windows = [tuple(w) for w in spec["segments"]]
    start, state, frames = _resume(spec, len(windows))
    pts = read_points(spec) if state is None else state.positions  # points are ignored once state is set
    ds = with_retries(
        lambda: parts.source_dataset(spec["dataset_url"], spec.get("dataset_options")), "opening the dataset"
    )
    call = spec["call"]
    for k in range(start, len(windows)):
        track = with_retries(
            lambda k=k, s=state: ds.track(pts, **call, steps=windows[k], state=s), "tracking particles"
        )
        state = TrackState(track.positions, track.left_domain, track.stop_time)
        if track.trajectory is not None:
            frames.append(track.trajectory)
        if k < len(windows) - 1:
            _save(spec, k, state, track.trajectory)
    values = np.concatenate(frames) if call.get("every") else state.positions  # type: ignore[union-attr]
    return commit_values(spec, values)


class Particles(PointKind):
    name = "particles"
    request = ParticlesJobRequest

    def check(self, ctx: JobContext, req: ParticlesJobRequest, points: np.ndarray | None) -> int:
        if req.scheme not in SCHEMES:
            raise unknown("tracking scheme", req.scheme, SCHEMES, error=InvalidInput)
        count_steps(req.t_start, req.t_end, req.dt)  # t_end before t_start: refused now, not on a worker
        _, _, meta = ctx.dataset(req.dataset)
        n = check_point_query(meta, req, points, [req.t_start, req.t_end])
        if meta.variables[req.variable].ncomp != 3:
            raise InvalidInput(
                f"tracking needs a 3-component velocity; {req.variable!r} has "
                f"{meta.variables[req.variable].ncomp} components"
            )
        frames = int(np.ceil(abs(req.t_end - req.t_start) / req.every)) + 2 if req.every else 1
        return n * frames * 3 * 8

    def plan(self, ctx: JobContext, job_id: str, req: ParticlesJobRequest) -> Plan:
        call = {
            "t_start": req.t_start,
            "t_end": req.t_end,
            "dt": req.dt,
            "scheme": req.scheme,
            "every": req.every,
            "spatial": req.spatial,
            "temporal": req.temporal,
            "variable": req.variable,
        }
        windows = segments(req.t_start, req.t_end, req.dt, ctx.track_segment_steps)
        nsteps = max(1, count_steps(req.t_start, req.t_end, req.dt))
        extra = {"call": call, "segments": [list(w) for w in windows]}
        specs = self.batches(ctx, job_id, req, nsteps, extra)
        final = ctx.base_spec(job_id) | {"kind": req.kind, "point_axis": 1 if req.every else 0}
        return Plan(specs, final)

    run_part = staticmethod(run_part)


KIND = Particles()
