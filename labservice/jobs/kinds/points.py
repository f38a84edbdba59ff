"""The ``points`` job kind (values at millions of points, at one time or a series), and what the point
kinds share: checking and storing the points, batching them, and putting the batches back in order.

The points are stored once, sorted by the Morton key of their grid cell (``.work/points.f64``, with the
permutation in ``.work/order.i64``), so that a batch of consecutive points reads few chunks. Each part
evaluates one batch; the finalizer writes ``<kind>.npy`` in the caller's point order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labservice.errors import InvalidInput, OutOfDomain, StorageUnavailable, unknown
from labservice.interpolation.operators import output_width
from labservice.interpolation.temporal import series_length
from labservice.jobs import parts
from labservice.jobs.kinds.base import JobContext, JobKind, Plan
from labservice.jobs.parts import WORK, with_retries
from labservice.requests import PointsJobRequest


def morton_order(meta: Any, points: np.ndarray, cell: int = 1) -> np.ndarray:
    """Permutation sorting points by the Morton key of the grid cell (of ``cell`` nodes) they fall in."""
    from labservice.storage.morton import MAX_INDEX, morton_argsort

    idx = []
    for k, name in enumerate(("x", "y", "z")):
        axis = meta.grid.axis(name)
        c = axis.coords()
        p = points[:, k]
        if axis.periodic:
            p = c[0] + np.mod(p - c[0], axis.period)
        i = np.clip(np.searchsorted(c, p, side="right") - 1, 0, axis.size - 1) // cell
        idx.append(np.clip(i, 0, MAX_INDEX))
    return morton_argsort(*idx)


def check_point_query(meta: Any, req: Any, points: np.ndarray | None, asked: list[float]) -> int:
    """Check the request's variable and times against the dataset; returns the number of points."""
    if req.variable not in meta.variables:
        raise unknown("variable", req.variable, meta.variables)
    lo, hi = float(meta.times[0]), float(meta.times[-1])
    for t in asked:  # refuse times outside the stored range now, rather than fail on a worker later
        if not lo <= t <= hi:
            raise OutOfDomain(f"job times must be in [{lo:.6g}, {hi:.6g}] (the stored range); got {t!r}")
    return 0 if points is None else len(points)


def read_points(spec: dict[str, Any]) -> np.ndarray:
    """The part's batch of (Morton-sorted) points."""
    scratch, job, start, stop = parts.scratch_of(spec), spec["job"], spec["start"], spec["stop"]
    raw = with_retries(
        lambda: scratch.read_bytes(job, f"{WORK}/points.f64", start * 24, stop * 24),
        "reading the job's points",
    )
    return np.frombuffer(raw, dtype=np.float64).reshape(-1, 3).copy()


def commit_values(spec: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    """Store a batch's result as ``.parts/<n>.npy`` and commit the part."""
    scratch, job, part = parts.scratch_of(spec), spec["job"], spec["part"]
    values = np.asarray(values)
    entry = parts.put_object(
        scratch, job, parts.part_name(part, "npy"), parts.npy_bytes(values), "writing a part"
    )
    record = {
        "part": part,
        "start": spec["start"],
        "stop": spec["stop"],
        "shape": list(values.shape),
        "dtype": str(values.dtype),
        "files": [entry],
    }
    return parts.commit(scratch, job, part, record)


def run_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``Dataset.points`` on one batch."""
    done = parts.committed(parts.scratch_of(spec), spec["job"], spec["part"])
    if done is not None:
        return done
    pts = read_points(spec)
    ds = with_retries(
        lambda: parts.source_dataset(spec["dataset_url"], spec.get("dataset_options")), "opening the dataset"
    )
    call = dict(spec["call"])
    values = with_retries(lambda: ds.points(call.pop("variable"), pts, **call), "evaluating points")
    return commit_values(spec, values)


def finalize(spec: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put every batch back in the caller's point order and write ``<kind>.npy`` plus the manifest.

    The point axis of a batch result is axis ``spec["point_axis"]`` (1 for time series, else 0).
    """
    scratch, job = parts.scratch_of(spec), spec["job"]
    order = np.frombuffer(
        with_retries(lambda: scratch.read_bytes(job, f"{WORK}/order.i64"), "reading the order"), np.int64
    )
    records = sorted(records, key=lambda r: r["part"])
    first = records[0]
    axis = spec["point_axis"]
    shape = list(first["shape"])
    shape[axis] = len(order)

    def write(path: str) -> None:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(first["dtype"]), shape=tuple(shape))
        for r in records:
            raw = with_retries(
                lambda r=r: scratch.read_bytes(job, parts.part_name(r["part"], "npy")), "reading a part"
            )
            where = [slice(None)] * len(shape)
            where[axis] = order[r["start"] : r["stop"]]
            out[tuple(where)] = parts.load_npy(raw)
        out.flush()
        del out

    entry = parts.put_result(scratch, job, f"{spec['kind']}.npy", write)
    return parts.write_manifest(scratch, job, [entry.to_dict() | {"format": "npy"}])


class PointKind(JobKind):
    """What the point kinds share: points stored sorted, batches of about ``points_per_task`` values."""

    takes_points = True

    def accept(self, ctx: JobContext, job_id: str, req: Any, points: np.ndarray | None) -> None:
        _, _, meta = ctx.dataset(req.dataset)
        pts = np.asarray(points, dtype=np.float64)
        order = morton_order(meta, pts).astype(np.int64)
        ctx.scratch.put_bytes(job_id, f"{WORK}/points.f64", np.ascontiguousarray(pts[order]).tobytes())
        ctx.scratch.put_bytes(job_id, f"{WORK}/order.i64", order.tobytes())

    def batches(
        self, ctx: JobContext, job_id: str, req: Any, per_point: int, extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Part specs over consecutive point ranges; ``per_point`` is the work per point (times, steps)."""
        url, options = ctx.resolve_dataset(req.dataset)
        base = ctx.base_spec(job_id) | {"dataset_url": url, "dataset_options": options, "kind": req.kind}
        n = ctx.scratch.size(job_id, f"{WORK}/points.f64") // 24
        per = max(256, ctx.points_per_task // per_point)
        return [
            base | extra | {"part": i, "start": a, "stop": min(a + per, n)}
            for i, a in enumerate(range(0, n, per))
        ]

    finalize = staticmethod(finalize)


class Points(PointKind):
    name = "points"
    request = PointsJobRequest

    def inputs(self, ctx: JobContext, req: PointsJobRequest, points: np.ndarray | None) -> np.ndarray | None:
        """The points sent, or those of ``points_table`` (read once, at submission: later changes to the table
        do not change the job)."""
        if req.points_table is None:
            return points
        if points is not None:
            raise InvalidInput("send either points or points_table, not both")
        if ctx.mydb is None:
            raise StorageUnavailable("this server has no MyDB (no platform database), so points_table cannot be used")
        if ctx.owner is None:
            raise InvalidInput("points_table needs a token of a user")
        return ctx.mydb.points(ctx.mydb.user_of_token(ctx.owner)[0], req.points_table)

    def check(self, ctx: JobContext, req: PointsJobRequest, points: np.ndarray | None) -> int:
        _, _, meta = ctx.dataset(req.dataset)
        n = check_point_query(meta, req, points, req.asked_times())
        nt = 1 if req.times is None else series_length(*req.times.as_tuple())
        return n * nt * output_width(req.operator, meta.variables[req.variable].ncomp) * 8

    def plan(self, ctx: JobContext, job_id: str, req: PointsJobRequest) -> Plan:
        call: dict[str, Any] = {
            "variable": req.variable,
            "spatial": req.spatial,
            "temporal": req.temporal,
            "operator": req.operator,
        }
        if req.times is not None:
            call["times"] = list(req.times.as_tuple())
        else:
            call["time"] = req.time
        specs = self.batches(ctx, job_id, req, req.ntimes(), {"call": call})
        final = ctx.base_spec(job_id) | {"kind": req.kind, "point_axis": 1 if req.times is not None else 0}
        return Plan(specs, final)

    run_part = staticmethod(run_part)


KIND = Points()
