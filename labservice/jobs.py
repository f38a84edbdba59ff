"""Batch jobs on Dask: validate, register, split into tasks, run, commit, expire.

:class:`JobEngine` owns a Dask client (an embedded ``LocalCluster`` of processes by default, or an existing
scheduler), the SQLite :class:`~labservice.job_registry.JobRegistry` and the
:class:`~labservice.scratch.Scratch` store. Each job gets a monitor thread that plans it, submits its tasks,
counts finished tasks into the registry and commits the result; the task functions themselves live in
:mod:`labservice.job_tasks` (they run on workers).

Life of a job: ``queued`` (registered, nothing submitted) -> ``running`` (tasks submitted) -> ``done`` (every
part committed, manifest written) or ``failed`` (error text kept) or ``cancelled``; a ``done`` job becomes
``expired`` when its time-to-live passes and its files are deleted. On :meth:`JobEngine.start` every job
still queued or running is resubmitted; committed parts are skipped, so the job resumes where it was, and
a job whose manifest was written before the crash is recorded done without running again.

Work splits by Morton range: cutout shards are ordered by the Morton key of their shard index and cut into
contiguous runs, points by the Morton key of their grid cell. On a multi-node cluster where workers sit
next to the data, pin each run to the worker holding it by passing ``workers=[address]`` to
``client.map``, one call per worker (for example from
``labservice.storage.partition.partitions(meta, variable, n_workers)``, which gives the same contiguous
Morton ranges per worker); the embedded cluster does not need it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, TypeAdapter, ValidationError, model_validator

from labservice import job_tasks as tasks
from labservice.branch_jobs import BranchCutoutRequest, simulation_resolver
from labservice.errors import (
    Forbidden,
    InvalidInput,
    LabError,
    LimitExceeded,
    NotFound,
    OutOfDomain,
    QuotaExceeded,
)
from labservice.job_registry import ACTIVE, FINAL, JobRecord, JobRegistry
from labservice.scratch import Scratch

log = logging.getLogger("labservice.jobs")
DAY = 86400.0
MIB = 1 << 20
MAX_SERIES = 100_000  # times in one points series, positions kept per particle (as for synchronous requests)
MAX_JOB_STEPS = 10_000_000  # integration steps of one particles job
RETRY_DRAIN_SECONDS = 120.0  # a resumed job waits this long at most for the killed attempt's tasks

# -- requests --------------------------------------------------------------------------------------

Range = tuple[int | None, int | None, int | None] | tuple[int | None, int | None] | str | None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(description="Dataset id.")


class CutoutRequest(_Request):
    """A cutout of one or more variables at one or more stored times."""

    kind: Literal["cutout"] = "cutout"
    variables: list[str] = Field(default_factory=list, description="Variables to cut out.")
    variable: str | None = Field(default=None, description="One variable (instead of variables).")
    times: list[FiniteFloat] | None = Field(default=None, description="Stored times; default the first one.")
    time_indices: list[int] | None = Field(default=None, description="Stored time indices instead of times.")
    x: Range = None
    y: Range = None
    z: Range = None
    formats: list[Literal["zarr", "hdf5", "netcdf"]] = Field(default=["zarr"], min_length=1)

    @model_validator(mode="after")
    def _one_or_more_variables(self) -> CutoutRequest:
        if self.variable is not None and self.variable not in self.variables:
            self.variables = [self.variable, *self.variables]
        if not self.variables:
            raise ValueError("give variables (a list) or variable (one name)")
        self.variables = list(dict.fromkeys(self.variables))
        return self


class PointsRequest(_Request):
    """Values at many points (sent separately as an (N, 3) array), at one time or a series."""

    kind: Literal["points"] = "points"
    variable: str
    time: FiniteFloat | None = None
    times: tuple[FiniteFloat, FiniteFloat, FiniteFloat] | None = Field(
        default=None, description="(start, end, step)."
    )
    spatial: str = "lag4"
    temporal: str = "none"
    operator: str = "field"

    @model_validator(mode="after")
    def _series(self) -> PointsRequest:
        if (self.time is None) == (self.times is None):
            raise ValueError("give exactly one of 'time' (a number) or 'times' ([start, end, step])")
        if self.times is not None:
            start, end, step = self.times
            if step <= 0 or end < start:
                raise ValueError(
                    f"times must be (start, end, step) with step > 0 and end >= start; got {self.times}"
                )
            if (end - start) / step > MAX_SERIES:
                raise ValueError(f"times holds more than {MAX_SERIES} times; use a larger step")
        return self


class ParticlesRequest(_Request):
    """Particle tracking from the given start positions."""

    kind: Literal["particles"] = "particles"
    t_start: FiniteFloat
    t_end: FiniteFloat
    dt: FiniteFloat = Field(gt=0)
    scheme: Literal["rk2", "rk4"] = "rk2"
    every: FiniteFloat | None = Field(
        default=None, gt=0, description="Also keep positions every this much time."
    )
    spatial: str = "lag4"
    temporal: str = "pchip"

    @model_validator(mode="after")
    def _bounded(self) -> ParticlesRequest:
        span = abs(self.t_end - self.t_start)
        if span / self.dt > MAX_JOB_STEPS:
            raise ValueError(f"dt = {self.dt:g} makes over {MAX_JOB_STEPS} steps; use a larger dt")
        if self.every is not None and span / self.every > MAX_SERIES:
            raise ValueError(f"every = {self.every:g} keeps over {MAX_SERIES} positions; use a larger every")
        return self


JobRequest = Annotated[
    CutoutRequest | PointsRequest | ParticlesRequest | BranchCutoutRequest, Field(discriminator="kind")
]
_request_adapter: TypeAdapter[Any] = TypeAdapter(JobRequest)


def request_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The JSON schema of a job request (a ``kind``-discriminated union), for the OpenAPI document."""
    return _request_adapter.json_schema(ref_template=ref_template)


OPERATOR_WIDTH = {"field": 1, "gradient": 3, "hessian": 6, "laplacian": 1}


def parse_request(body: dict[str, Any]) -> CutoutRequest | PointsRequest | ParticlesRequest:
    """Validate a job request; errors name the field to change."""
    try:
        return _request_adapter.validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise InvalidInput(f"job request: {where}: {first['msg']}") from None


@dataclass(frozen=True)
class JobLimits:
    """The job part of a caller's limits (``labservice.limits.Limits`` has the same field names)."""

    jobs_allowed: bool = True
    max_running_jobs: int = 4
    scratch_bytes: int = 64 << 30
    max_job_bytes: int = 16 << 30


@dataclass
class _Live:
    """What the engine holds for a job it is running."""

    thread: threading.Thread
    futures: list[Any]
    session: str


# -- the engine ------------------------------------------------------------------------------------


class JobEngine:
    """Runs batch jobs on a Dask cluster and keeps their state in SQLite.

    Parameters
    ----------
    registry_path
        SQLite file of the job registry.
    scratch_url, scratch_options
        Where results go (local path or fsspec URL) and its fsspec options.
    scheduler
        ``tcp://host:port`` of an existing Dask scheduler; None starts an embedded ``LocalCluster``.
    resolve_dataset
        Maps a dataset id to ``(url, storage_options)``. None means ids are URLs (library use only:
        never expose that to untrusted callers).
    n_workers, threads_per_worker, worker_memory
        Size of the embedded cluster.
    ttl_days
        Lifetime of results.
    shard_edge, chunk_edge
        Output shard and inner chunk edge (points) of cutout zarr arrays; one shard is the unit of work.
    task_bytes
        Target output bytes of one cutout task (a Morton run of shards).
    points_per_task
        Points x times of one points or particles task.
    retries
        Dask retries of a failed task (on top of the task's own storage retries).
    sweep_seconds
        Period of the expiry sweeper.
    """

    def __init__(
        self,
        registry_path: str | Path,
        scratch_url: str,
        scratch_options: dict[str, Any] | None = None,
        scheduler: str | None = None,
        resolve_dataset: Callable[[str], tuple[str, dict[str, Any] | None]] | None = None,
        resolve_simulation: Callable[[str], str | Path] | None = None,
        n_workers: int = 2,
        threads_per_worker: int = 1,
        worker_memory: str | int = "2GiB",
        ttl_days: float = 7.0,
        shard_edge: int = 128,
        chunk_edge: int = 64,
        task_bytes: int = 32 * MIB,
        points_per_task: int = 65536,
        retries: int = 3,
        sweep_seconds: float = 60.0,
    ) -> None:
        self.registry = JobRegistry(registry_path)
        self.scratch = Scratch(scratch_url, scratch_options)
        self.scheduler = scheduler
        self.resolve_dataset = resolve_dataset or (lambda ds: (ds, None))
        self.resolve_simulation = resolve_simulation
        self.n_workers, self.threads_per_worker, self.worker_memory = (
            n_workers,
            threads_per_worker,
            worker_memory,
        )
        self.ttl = ttl_days * DAY
        self.shard_edge, self.chunk_edge = shard_edge, chunk_edge
        self.task_bytes, self.points_per_task = task_bytes, points_per_task
        self.retries = retries
        self.sweep_seconds = sweep_seconds
        self.client: Any = None
        self.cluster: Any = None
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> JobEngine:
        """Connect to (or start) the cluster, resume unfinished jobs and start the sweeper."""
        from distributed import Client, LocalCluster

        self._stopping.clear()
        if self.scheduler:
            self.client = Client(self.scheduler, set_as_default=False, timeout=30)
        else:
            self.cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                memory_limit=self.worker_memory,
            )
            self.client = Client(self.cluster, set_as_default=False)
        for rec in self.registry.list(statuses=("cancelled", "failed")):
            if rec.finished and time.time() - rec.finished < self.ttl:
                self.scratch.delete(rec.id)  # a crash during cancel may have left parts behind
        for rec in self.registry.list(statuses=ACTIVE):
            log.info("resuming job %s (%s)", rec.id, rec.status)
            self._launch(rec.id)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="labservice-job-sweeper", daemon=True)
        self._sweeper.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop monitoring and close the cluster. Running jobs stay ``running`` and resume on next start."""
        self._stopping.set()
        with self._lock:
            live = list(self._live.values())
        for item in live:
            item.thread.join(timeout)
        if self._sweeper is not None:
            self._sweeper.join(timeout)
        if self.client is not None:
            self.client.close(timeout=timeout)
        if self.cluster is not None:
            self.cluster.close(timeout=timeout)
        self.client = self.cluster = None

    def __enter__(self) -> JobEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the public calls --------------------------------------------------------------------------
    def submit(
        self,
        owner: str | None,
        request: dict[str, Any] | CutoutRequest | PointsRequest | ParticlesRequest,
        points: np.ndarray | None = None,
        limits: Any = None,
    ) -> JobRecord:
        """Validate, check quotas, register and start a job. Returns its record (status ``queued``).

        Raises
        ------
        Forbidden
            Public callers and tokens without jobs.
        InvalidInput, NotFound, OutOfDomain
            For a bad request (checked against the dataset's metadata before anything runs).
        LimitExceeded
            When the job's output is larger than ``limits.max_job_bytes``.
        QuotaExceeded
            When the owner already runs ``max_running_jobs`` or would pass ``scratch_bytes``.
        """
        lim = limits if limits is not None else JobLimits()
        if owner is None or not lim.jobs_allowed:
            raise Forbidden("batch jobs need a registered token that allows jobs; ask the operator for one")
        req = request if isinstance(request, BaseModel) else parse_request(request)
        if isinstance(req, BranchCutoutRequest):
            if points is not None:
                raise InvalidInput("branch-cutout jobs take no points; remove them")
            from labservice.branch_jobs import check_branch_job

            pts, nbytes = None, check_branch_job(self._simulation_path(req.dataset), req)
        else:
            url, options = self.resolve_dataset(req.dataset)
            meta = self._meta(url, options)
            pts = self._check_points(req, points, meta)
            nbytes = self._output_bytes(req, meta, pts)
        if nbytes > lim.max_job_bytes:
            raise LimitExceeded(
                f"this job would write {nbytes / MIB:.1f} MiB, over your job size cap of "
                f"{lim.max_job_bytes / MIB:.1f} MiB; use a larger stride, fewer times or split it"
            )
        params = req.model_dump(mode="json")
        rec, reason = self.registry.insert_if_within(
            owner, req.kind, params, nbytes, lim.max_running_jobs, lim.scratch_bytes
        )
        if rec is None:
            active, used = self.registry.usage(owner)
            if reason == "jobs":
                raise QuotaExceeded(
                    f"you already have {active} jobs queued or running, your limit is {lim.max_running_jobs}; "
                    "wait for one to finish or cancel one"
                )
            raise QuotaExceeded(
                f"this job needs {nbytes / MIB:.1f} MiB of scratch but you hold {used / MIB:.1f} MiB of "
                f"{lim.scratch_bytes / MIB:.1f} MiB; delete finished jobs (DELETE /api/v1/jobs/{{id}}) first"
            )
        if pts is not None:
            try:
                self._store_points(rec.id, meta, pts)
            except Exception as exc:
                self.registry.end(rec.id, "failed", tasks.describe(exc))
                raise
        self._launch(rec.id)
        return rec

    def get(self, owner: str | None, job_id: str) -> JobRecord:
        """A job of this owner; NotFound for unknown ids and for other owners' jobs alike."""
        rec = self.registry.get(job_id)
        if rec is None or owner is None or rec.owner != owner:
            raise NotFound(f"no job {job_id!r} among your jobs; GET /api/v1/jobs lists them")
        return rec

    def list(self, owner: str | None) -> list[JobRecord]:
        return [] if owner is None else self.registry.list(owner)

    def cancel(self, owner: str | None, job_id: str, timeout: float = 30.0) -> JobRecord:
        """Cancel a queued or running job, stop its tasks and delete its output.

        On a finished job, deletes its files (a done job becomes ``expired``). Idempotent.
        """
        rec = self.get(owner, job_id)
        if rec.status in ACTIVE:
            self.registry.end(job_id, "cancelled", "cancelled by its owner")
            self.scratch.tombstone(job_id)  # stragglers check it before every write
            with self._lock:
                live = self._live.get(job_id)
            if live is not None and self.client is not None:
                self.client.cancel(live.futures, force=True)
                self._drain(job_id, timeout)
        elif rec.status == "done":
            self.registry.end(job_id, "expired", "deleted by its owner", from_statuses=("done",))
        self._delete_all(job_id)
        return self.get(owner, job_id)

    def _delete_all(self, job_id: str, rounds: int = 5) -> None:
        """Delete the job's prefix until it stays empty (a write racing the delete is caught next round)."""
        for _ in range(rounds):
            try:
                self.scratch.delete(job_id)
            except LabError:
                pass  # e.g. "directory not empty" when a file appeared mid-delete: go round again
            time.sleep(0.2)
            if not self.scratch.list(job_id):
                return
        self.scratch.delete(job_id)

    def wait(self, job_id: str, timeout: float = 300.0, poll: float = 0.2) -> JobRecord:
        """Block until the job is in a final state; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            rec = self.registry.get(job_id)
            if rec is None:
                raise NotFound(f"no job {job_id!r}")
            if rec.status in FINAL:
                return rec
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} still {rec.status} ({rec.done}/{rec.total}) after {timeout} s"
                )
            time.sleep(poll)

    def file_entry(self, owner: str | None, job_id: str, name: str) -> dict[str, Any]:
        """The file entry a download may serve: a listed result, or an object inside a listed zarr."""
        rec = self.get(owner, job_id)
        if rec.status != "done":
            raise NotFound(f"job {job_id} is {rec.status}; files can be downloaded once it is done")
        for f in rec.files:
            if f["name"] == name:
                return f
            if f.get("format") == "zarr" and name.startswith(f["name"] + "/") and ".tmp-" not in name:
                return {"name": name, "size": self.scratch.size(job_id, name)}
        raise NotFound(f"job {job_id} has no file {name!r}; it has {', '.join(f['name'] for f in rec.files)}")

    def sweep(self, now: float | None = None) -> list[str]:
        """Expire done jobs past their time-to-live: delete their files, mark them ``expired``."""
        gone = []
        for rec in self.registry.expired(now):
            self.scratch.delete(rec.id)
            if self.registry.end(rec.id, "expired", None, from_statuses=("done",)):
                gone.append(rec.id)
        return gone

    # -- planning ----------------------------------------------------------------------------------
    def _simulation_path(self, sim_id: str) -> str | Path:
        """The folder of a cosmology simulation (for branch-cutout jobs)."""
        if self.resolve_simulation is None:
            raise NotFound(f"this server runs no cosmology jobs, so {sim_id!r} cannot be used in a job")
        return self.resolve_simulation(sim_id)

    @staticmethod
    def _meta(url: str, options: dict[str, Any] | None) -> Any:
        from labservice.storage import open_store

        store = open_store(url, storage_options=options)
        try:
            return store.meta
        finally:
            store.close()

    @staticmethod
    def _check_points(req: Any, points: np.ndarray | None, meta: Any) -> np.ndarray | None:
        if req.kind == "cutout":
            if points is not None:
                raise InvalidInput("cutout jobs take no points; remove them")
            return None
        if points is None:
            raise InvalidInput(f"{req.kind} jobs need points: an (N, 3) array of x, y, z")
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
            raise InvalidInput(f"points must have shape (N, 3) with N >= 1; got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise InvalidInput("points must be finite numbers; remove NaN and infinite values")
        if req.kind == "points" and req.variable not in meta.variables:
            from labservice.errors import unknown

            raise unknown("variable", req.variable, meta.variables)
        JobEngine._check_times(req, meta)
        return pts

    @staticmethod
    def _check_times(req: Any, meta: Any) -> None:
        """Refuse times outside the stored range now, rather than fail on a worker later."""
        if req.kind == "points":
            asked = [req.time] if req.times is None else [req.times[0], req.times[1]]
            asked = [t for t in asked if t is not None]
        else:
            asked = [req.t_start, req.t_end]
        lo, hi = float(meta.times[0]), float(meta.times[-1])
        for t in asked:
            if not lo <= t <= hi:
                raise OutOfDomain(f"job times must be in [{lo:.6g}, {hi:.6g}] (the stored range); got {t!r}")

    def _times(self, req: CutoutRequest, meta: Any) -> list[int]:
        from labservice.cutout.region import time_index

        if req.time_indices is not None:
            bad = [t for t in req.time_indices if not 0 <= t < len(meta.times)]
            if bad:
                raise InvalidInput(f"time_indices must be in [0, {len(meta.times) - 1}]; got {bad[0]}")
            return list(req.time_indices)
        if req.times is not None:
            return [time_index(meta, t) for t in req.times]
        return [0]

    def _output_bytes(self, req: Any, meta: Any, pts: np.ndarray | None) -> int:
        if req.kind == "cutout":
            from labservice.cutout.region import plan_cutout

            nt = len(self._times(req, meta))
            one = sum(plan_cutout(meta, v, req.x, req.y, req.z).nbytes for v in req.variables)
            return one * nt * len(set(req.formats) | {"zarr"})
        n = len(pts)  # type: ignore[arg-type]
        if req.kind == "points":
            nt = _series_length(req.times) if req.times is not None else 1
            width = meta.variables[req.variable].ncomp * OPERATOR_WIDTH.get(req.operator, 1)
            return n * nt * width * 8
        frames = int(np.ceil(abs(req.t_end - req.t_start) / req.every)) + 2 if req.every else 1
        return n * frames * 3 * 8

    def _store_points(self, job_id: str, meta: Any, pts: np.ndarray) -> None:
        order = tasks.morton_order(meta, pts).astype(np.int64)
        self.scratch.put_bytes(job_id, f"{tasks.WORK}/points.f64", np.ascontiguousarray(pts[order]).tobytes())
        self.scratch.put_bytes(job_id, f"{tasks.WORK}/order.i64", order.tobytes())

    def _plan(
        self, rec: JobRecord
    ) -> tuple[Callable[..., Any], list[dict[str, Any]], Callable[..., Any], dict[str, Any]]:
        """Task function, task specs, finalizer and its spec. Creates the output skeleton once."""
        req = parse_request(rec.params)
        if isinstance(req, BranchCutoutRequest):
            from labservice.branch_jobs import plan_branch

            return plan_branch(rec.id, req, self._simulation_path(req.dataset), list(self.scratch.spec()))
        url, options = self.resolve_dataset(req.dataset)
        meta = self._meta(url, options)
        base = {
            "job": rec.id,
            "scratch": list(self.scratch.spec()),
            "dataset_url": url,
            "dataset_options": options,
        }
        if req.kind == "cutout":
            return self._plan_cutout(rec, req, meta, base)
        return self._plan_points(rec, req, meta, base)

    def _plan_cutout(self, rec: JobRecord, req: CutoutRequest, meta: Any, base: dict[str, Any]) -> Any:
        from labservice.cutout.region import plan_cutout
        from labservice.job_outputs import create_cutout_zarr

        t_in = self._times(req, meta)
        plans = {v: plan_cutout(meta, v, req.x, req.y, req.z) for v in req.variables}
        first = plans[req.variables[0]]
        counts = first.shape[:3]
        shard = [min(self.shard_edge, n) for n in counts]
        chunk = [s if s <= self.chunk_edge or s % self.chunk_edge else self.chunk_edge for s in shard]
        zarr_path = "cutout.zarr" if "zarr" in req.formats else f"{tasks.WORK}/cutout.zarr"
        ranges = {a: first.axis_range(a) for a in ("x", "y", "z")}
        blocks = []
        for var in req.variables:
            for t_out, t in enumerate(t_in):
                for iz, iy, ix in tasks.shard_blocks(counts, tuple(shard)):
                    sub = {}
                    for a, i, s, n in (
                        ("z", iz, shard[0], counts[0]),
                        ("y", iy, shard[1], counts[1]),
                        ("x", ix, shard[2], counts[2]),
                    ):
                        r = ranges[a]
                        lo, hi = i * s, min((i + 1) * s, n)
                        sub[a] = [r.start + lo * r.step, r.start + (hi - 1) * r.step + 1, r.step]
                    blocks.append({"variable": var, "t_in": t, "t_out": t_out, "shard": [iz, iy, ix], **sub})
        ncomp = max(len(p.components) for p in plans.values())
        groups = tasks.group_by_bytes(blocks, 4 * int(np.prod(shard)) * ncomp, self.task_bytes)
        geometry = {"shape": list(counts), "shard_shape": shard, "chunk_shape": chunk}
        specs = [
            base | geometry | {"part": i, "zarr_path": zarr_path, "blocks": g} for i, g in enumerate(groups)
        ]
        if not self.scratch.exists(rec.id, f"{tasks.WORK}/skeleton.json"):
            # A fresh start (or a crash before the skeleton was complete): no part may survive it.
            self.scratch.delete(rec.id, tasks.PARTS)
            layout = {
                "variables": {
                    v: {"components": list(p.components), "units": p.units} for v, p in plans.items()
                },
                "shape": [len(t_in), *counts],
                "shard": shard,
                "chunk": chunk,
                "coords": {
                    "time": [float(meta.times[t]) for t in t_in],
                    **{a: first.coords(a).tolist() for a in "zyx"},
                },
                "attrs": {
                    "dataset": meta.id,
                    "title": meta.title,
                    "ranges": {a: [r.start, r.stop, r.step] for a, r in ranges.items()},
                },
            }
            create_cutout_zarr(self.scratch, rec.id, zarr_path, layout)
            self.scratch.put_bytes(rec.id, f"{tasks.WORK}/skeleton.json", json.dumps(layout).encode())
        final = base | {
            "zarr_path": zarr_path,
            "formats": list(dict.fromkeys(req.formats)),
            "variables": req.variables,
        }
        return tasks.run_cutout_part, specs, tasks.finalize_cutout, final

    def _plan_points(self, rec: JobRecord, req: Any, meta: Any, base: dict[str, Any]) -> Any:
        n = self.scratch.size(rec.id, f"{tasks.WORK}/points.f64") // 24
        if req.kind == "points":
            call = {
                "variable": req.variable,
                "spatial": req.spatial,
                "temporal": req.temporal,
                "operator": req.operator,
            }
            if req.times is not None:
                call["times"] = list(req.times)
                nt = _series_length(req.times)
            else:
                call["time"] = req.time
                nt = 1
            axis = 1 if req.times is not None else 0
        else:
            call = {
                "t_start": req.t_start,
                "t_end": req.t_end,
                "dt": req.dt,
                "scheme": req.scheme,
                "every": req.every,
                "spatial": req.spatial,
                "temporal": req.temporal,
            }
            nt = max(1, int(np.ceil(abs(req.t_end - req.t_start) / req.dt)))
            axis = 1 if req.every else 0
        per = max(256, self.points_per_task // nt)
        specs = [
            base | {"kind": req.kind, "part": i, "start": a, "stop": min(a + per, n), "call": call}
            for i, a in enumerate(range(0, n, per))
        ]
        return (
            tasks.run_points_part,
            specs,
            tasks.finalize_points,
            base | {"kind": req.kind, "point_axis": axis},
        )

    # -- running -----------------------------------------------------------------------------------
    def _launch(self, job_id: str) -> None:
        session = uuid.uuid4().hex[:8]
        thread = threading.Thread(
            target=self._run, args=(job_id, session), name=f"labservice-job-{job_id}", daemon=True
        )
        with self._lock:
            self._live[job_id] = _Live(thread, [], session)
        thread.start()

    def _run(self, job_id: str, session: str) -> None:
        try:
            self._run_job(job_id, session)
        except CancelledError:
            pass  # a future was cancelled between its status check and its result: cancel() cleans up
        except Exception as exc:  # the job fails with the reason; the service keeps going
            if not self._stopping.is_set():
                log.exception("job %s failed", job_id)
                self._fail(job_id, exc)
        finally:
            with self._lock:
                live = self._live.get(job_id)
                if live is not None and live.session == session:
                    del self._live[job_id]

    def _run_job(self, job_id: str, session: str) -> None:
        from distributed import as_completed

        rec = self.registry.get(job_id)
        if rec is None or rec.status not in ACTIVE:
            return
        if self._finish_from_manifest(job_id):
            return
        fn, specs, finalize, final_spec = self._plan(rec)
        if not self.registry.start(job_id, total=len(specs)):
            self.scratch.delete(job_id)  # cancelled while planning: drop the skeleton just made
            return
        # One graph for all parts (map runs them in list order): the scheduler takes in a graph per
        # message, one at a time, so per-part submits left a cancel queued behind thousands of them.
        futures = self.client.map(
            fn,
            specs,
            key=[f"job-{job_id}-{session}-{spec['part']}" for spec in specs],
            pure=False,
            retries=self.retries,
        )
        with self._lock:
            live = self._live.get(job_id)
            if live is not None:
                live.futures = futures
        completed, done, records = as_completed(futures, loop=self.client.loop, raise_errors=False), 0, []
        while not completed.is_empty():
            finished = self._next_batch(completed)
            if finished is None:
                return
            for fut in finished:
                if fut.status == "cancelled":
                    return  # cancel() owns the clean-up
                if fut.status == "error":
                    error = fut.exception()  # before the cancel below, which releases it
                    self.client.cancel(futures, force=True)
                    if isinstance(error, BaseException):
                        raise error
                    raise RuntimeError(f"task {fut.key} failed without an error message (lost worker?)")
                records.append(fut.result())
                done += 1
            if finished:
                self.registry.progress(job_id, done)
        if self.registry.get(job_id).status != "running":  # type: ignore[union-attr]
            return
        if rec.attempts > 0:  # counted before this attempt's start()
            # Tasks of the killed attempt may still run on the workers (their client died, not the calls);
            # wait them out so none writes a shard or a part record after finalize and the clean-up.
            self._drain(job_id, timeout=RETRY_DRAIN_SECONDS)
            if self._finish_from_manifest(job_id):  # the killed attempt's finalize got there first
                return
        fin = self.client.submit(
            finalize,
            final_spec,
            records,
            key=f"job-{job_id}-{session}-final",
            pure=False,
            retries=self.retries,
        )
        with self._lock:
            if job_id in self._live:
                self._live[job_id].futures = [fin]
        if self._next_batch(as_completed([fin], loop=self.client.loop, raise_errors=False)) is None:
            return
        if fin.status == "cancelled":
            return
        self._finish(job_id, fin.result())

    def _finish(self, job_id: str, files: list[dict[str, Any]]) -> None:
        # Clean up before the job is recorded done, so a done job never shows working entries. A crash
        # in between is resumed by _finish_from_manifest: the manifest is the finalizer's last write.
        self.scratch.delete(job_id, tasks.PARTS)
        self.scratch.delete(job_id, tasks.WORK)
        nbytes = sum(f["size"] for f in files)
        if not self.registry.finish(job_id, files, nbytes, time.time() + self.ttl):
            self.scratch.delete(job_id)  # cancelled while finishing: leave nothing behind

    def _finish_from_manifest(self, job_id: str) -> bool:
        """Record a job done whose finalizer already wrote the manifest (an attempt died after it)."""
        if not self.scratch.exists(job_id, tasks.MANIFEST):
            return False
        manifest = json.loads(self.scratch.read_bytes(job_id, tasks.MANIFEST))
        entry = self.scratch.checksum(job_id, tasks.MANIFEST).to_dict() | {"format": "json"}
        log.info("job %s: finalized by an earlier attempt, recording it done", job_id)
        self._finish(job_id, [*manifest["files"], entry])
        return True

    def _next_batch(self, completed: Any) -> list[Any] | None:
        """Futures finished so far (waiting for at least one), or None when the engine is stopping."""
        while not self._stopping.is_set():
            if completed.has_ready():
                return list(completed.next_batch(block=False))
            time.sleep(0.05)
        return None

    def _fail(self, job_id: str, exc: BaseException) -> None:
        if self.registry.end(job_id, "failed", tasks.describe(exc)):
            try:
                self.scratch.delete(job_id)
            except LabError:
                log.warning("could not delete the output of failed job %s yet; the sweeper retries", job_id)

    def _drain(self, job_id: str, timeout: float) -> None:
        """Wait until no worker runs a task of the job (cancelled tasks finish their current call)."""
        prefix = f"job-{job_id}-"
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            running = self.client.run(tasks.executing_keys)
            busy = any(k.startswith(prefix) for keys in running.values() for k in keys)
            # Two quiet looks in a row: a task message already on its way to a worker shows up by then.
            quiet = 0 if busy else quiet + 1
            if quiet >= 2:
                return
            time.sleep(0.2)
        log.warning("tasks of cancelled job %s still running after %.0f s", job_id, timeout)

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self.sweep_seconds):
            try:
                self.sweep()
            except Exception:  # a flaky scratch store must not kill the sweeper
                log.exception("expiry sweep failed")


def _series_length(times: tuple[float, float, float]) -> int:
    start, end, step = times
    return int(np.floor((end - start) / step + 1e-9)) + 1


# -- wiring into the app ---------------------------------------------------------------------------


def engine_from_settings(settings: Any, datasets: Any = None) -> JobEngine:
    """Build the engine from :class:`labservice.settings.Settings` and the app's dataset registry."""
    data_dir = Path(settings.data_dir) if settings.data_dir else Path.cwd()
    scratch = settings.scratch_url or str(data_dir / "scratch")
    db = getattr(settings, "job_db", None) or (
        Path(scratch) / "jobs.sqlite" if "://" not in scratch else data_dir / "jobs.sqlite"
    )

    def resolve(dataset_id: str) -> tuple[str, dict[str, Any] | None]:
        ds = datasets.get(dataset_id)
        store = getattr(ds, "store", None) or ds.reader.store
        return store.url, getattr(store, "storage_options", None)

    return JobEngine(
        db,
        scratch,
        getattr(settings, "scratch_options", None) or None,
        scheduler=settings.dask_scheduler,
        resolve_dataset=resolve if datasets is not None else None,
        resolve_simulation=simulation_resolver(settings.data_dir),
        ttl_days=settings.job_ttl_days,
    )


def start_jobs(app: Any, settings: Any) -> JobEngine:
    """Lifespan hook: start the job engine and put it on ``app.state.jobs``."""
    engine = engine_from_settings(settings, getattr(app.state, "registry", None)).start()
    app.state.jobs = engine
    return engine


def stop_jobs(app: Any) -> None:
    """Lifespan hook: stop the engine (running jobs resume at the next start)."""
    engine = getattr(app.state, "jobs", None)
    if engine is not None:
        engine.stop()
        app.state.jobs = None
