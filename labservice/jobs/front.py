"""The API side of batch jobs: check and record a job, read it back, cancel it, serve its files.

:class:`JobFront` needs no Dask. It is all an API process holds when the engine runs as its own service
(``LABSERVICE_ENGINE=external``, ``labservice engine``): a submission is checked against the data and
inserted as ``queued``; listing, polling and downloads read the platform database and the scratch store; a
cancel is a state change in the database that the engine holding the job's lease acts on within seconds.
:class:`labservice.jobs.engine.JobEngine` extends it with the part that runs jobs (embedded mode).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from labservice.errors import Forbidden, InvalidInput, LabError, LimitExceeded, NotFound, QuotaExceeded
from labservice.jobs import parts
from labservice.jobs.kinds import JobContext, kind_of, parse_request
from labservice.jobs.lease import Leases
from labservice.jobs.registry import ACTIVE, FINAL, JobRecord, JobRegistry
from labservice.jobs.scratch import Scratch

log = logging.getLogger("labservice.jobs")
DAY = 86400.0
MIB = 1 << 20
# A submitter holds its new job this long at most while it stores the inputs; if it dies meanwhile, an
# engine claims the job after this and fails it for its missing inputs.
SUBMIT_HOLD_SECONDS = 300.0


@dataclass(frozen=True)
class JobLimits:
    """The job part of a caller's limits (``labservice.limits.Limits`` has the same field names)."""

    jobs_allowed: bool = True
    max_running_jobs: int = 4
    scratch_bytes: int = 64 << 30
    max_job_bytes: int = 16 << 30


class JobFront:
    """Submit, read and cancel jobs in the registry; serve their files from scratch. Runs nothing.

    Parameters
    ----------
    registry_path
        The job registry: a SQLite file, or a database URL once the registry takes one.
    scratch_url, scratch_options
        Where results go (local path or fsspec URL) and its fsspec options.
    resolve_dataset
        Maps a dataset id to ``(url, storage_options)``. None means ids are URLs (library use only:
        never expose that to untrusted callers).
    ttl_days
        Lifetime of results.
    shard_edge, chunk_edge, task_bytes, points_per_task, track_segment_steps
        The kinds' sizing (see :class:`labservice.jobs.engine.JobEngine`); the API side and the engine
        must agree on them, since the check at submission and the plan in the engine both use them.
    lease_seconds
        How long an engine's claim on a job lasts without a heartbeat.
    """

    def __init__(
        self,
        registry_path: str | Path,
        scratch_url: str,
        scratch_options: dict[str, Any] | None = None,
        resolve_dataset: Callable[[str], tuple[str, dict[str, Any] | None]] | None = None,
        resolve_simulation: Callable[[str], str | Path] | None = None,
        ttl_days: float = 7.0,
        shard_edge: int = 128,
        chunk_edge: int = 64,
        task_bytes: int = 32 * MIB,
        points_per_task: int = 65536,
        track_segment_steps: int | None = None,
        lease_seconds: float = 10.0,
    ) -> None:
        self.registry = JobRegistry(registry_path)
        self.scratch = Scratch(scratch_url, scratch_options)
        self.resolve_dataset = resolve_dataset or (lambda ds: (ds, None))
        self.resolve_simulation = resolve_simulation
        self.ttl = ttl_days * DAY
        self.shard_edge, self.chunk_edge = shard_edge, chunk_edge
        self.task_bytes, self.points_per_task = task_bytes, points_per_task
        self.track_segment_steps = track_segment_steps
        self.leases = Leases(self.registry, lease_seconds)
        self.engine_id: str | None = None  # an API process alone runs no jobs
        self.mydb: Any = None  # labservice.datasets.mydb.MyDB (set by wiring): points_table and the sql kind

    @property
    def context(self) -> JobContext:
        """What the job kinds may use while they check and plan."""
        return JobContext(
            self.scratch, self.resolve_dataset, self.resolve_simulation, self.shard_edge, self.chunk_edge,
            self.task_bytes, self.points_per_task, self.track_segment_steps, mydb=self.mydb,
        )  # fmt: skip

    # -- lifecycle (nothing to run on the API side) ------------------------------------------------
    def start(self) -> JobFront:
        return self

    def stop(self, timeout: float = 30.0) -> None:
        pass

    def __enter__(self) -> JobFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the public calls --------------------------------------------------------------------------
    def submit(
        self,
        owner: str | None,
        request: dict[str, Any] | BaseModel,
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
        req = parse_request(request)
        kind = kind_of(req)
        ctx = replace(self.context, owner=owner)
        pts = _check_points(req.kind, kind.takes_points, kind.inputs(ctx, req, points))
        nbytes = kind.check(ctx, req, pts)
        if nbytes > lim.max_job_bytes:
            raise LimitExceeded(
                f"this job would write {nbytes / MIB:.1f} MiB, over your job size cap of "
                f"{lim.max_job_bytes / MIB:.1f} MiB; use a larger stride, fewer times or split it"
            )
        params = req.model_dump(mode="json")
        # Inserted held by us: no engine may claim the job before its inputs are stored (accept below).
        holder = self.engine_id or f"submit-{uuid.uuid4().hex[:12]}"
        rec, reason = self.registry.insert_if_within(
            owner, req.kind, params, nbytes, lim.max_running_jobs, lim.scratch_bytes,
            held_by=holder, hold_seconds=SUBMIT_HOLD_SECONDS,
        )  # fmt: skip
        if rec is None:
            active, used = self.registry.usage(owner)
            if reason == "jobs":
                raise QuotaExceeded(
                    f"you already have {active} jobs queued or running, your limit is "
                    f"{lim.max_running_jobs}; wait for one to finish or cancel one"
                )
            raise QuotaExceeded(
                f"this job needs {nbytes / MIB:.1f} MiB of scratch but you hold {used / MIB:.1f} MiB of "
                f"{lim.scratch_bytes / MIB:.1f} MiB; delete finished jobs (DELETE /api/v1/jobs/{{id}}) first"
            )
        try:
            kind.accept(ctx, rec.id, req, pts)
        except Exception as exc:
            self.registry.end(rec.id, "failed", parts.describe(exc))
            self.leases.release(rec.id, holder)
            raise
        self._accepted(rec.id, holder)
        return rec

    def _accepted(self, job_id: str, holder: str) -> None:
        """A job is recorded and its inputs stored: let go of it, so that an engine claims it."""
        self._let_go(job_id, holder)

    def _let_go(self, job_id: str, holder: str) -> None:
        """End the submitter's hold; a job cancelled meanwhile (nobody ran it) loses its stored inputs."""
        self.leases.release(job_id, holder)
        rec = self.registry.get(job_id)
        if rec is not None and rec.status not in ACTIVE:
            self._delete_all(job_id)

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

        The job is ``cancelled`` at once (its quota is free again). The engine holding its lease, in this
        process or another, cancels its Dask tasks and deletes its files within seconds; a job no engine
        holds is cleaned up here. On a finished job, deletes its files (a done job becomes ``expired``).
        Idempotent.
        """
        rec = self.get(owner, job_id)
        if rec.status in ACTIVE:
            self.leases.request_cancel(job_id)  # the flag the owning engine polls
            self.registry.end(job_id, "cancelled", "cancelled by its owner")
            self.scratch.tombstone(job_id)  # stragglers check it before every write
            if self._stop_here(job_id, timeout):
                self._delete_all(job_id)
            elif self.leases.holder(job_id) in (None, self.engine_id):
                self._delete_all(job_id)  # nobody runs it (any more): nothing can write after this delete
            return self.get(owner, job_id)
        if rec.status == "done":
            self.registry.end(job_id, "expired", "deleted by its owner", from_statuses=("done",))
        self._delete_all(job_id)
        return self.get(owner, job_id)

    def _stop_here(self, job_id: str, timeout: float) -> bool:
        """Stop the job's tasks if this process runs it; False when another engine (or none) does."""
        return False

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


def _check_points(kind: str, takes_points: bool, points: Any) -> np.ndarray | None:
    """The job's (N, 3) points, for the kinds that take them; refuses points a kind does not take."""
    if not takes_points:
        if points is not None:
            raise InvalidInput(f"{kind} jobs take no points; remove them")
        return None
    if points is None:
        raise InvalidInput(f"{kind} jobs need points: an (N, 3) array of x, y, z")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise InvalidInput(f"points must have shape (N, 3) with N >= 1; got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise InvalidInput("points must be finite numbers; remove NaN and infinite values")
    return pts
