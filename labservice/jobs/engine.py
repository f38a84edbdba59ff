"""The job engine: validate, register, split into parts, run them on Dask, commit, resume, cancel, expire.

:class:`JobEngine` owns a Dask client (an embedded ``LocalCluster`` of processes by default, or an existing
scheduler), the SQLite :class:`~labservice.jobs.registry.JobRegistry` and the
:class:`~labservice.jobs.scratch.Scratch` store. It knows no job kind by name: it looks the request's
kind up in :data:`labservice.jobs.kinds.KINDS` and calls its ``check``, ``accept``, ``plan``, ``run_part``
and ``finalize``. Each job gets a monitor thread that plans it, submits all its parts as one graph,
counts finished parts into the registry and runs the finalizer.

Life of a job: ``queued`` (registered, nothing submitted) -> ``running`` (parts submitted) -> ``done`` (every
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
from typing import Any

import numpy as np
from pydantic import BaseModel

from labservice.errors import Forbidden, InvalidInput, LabError, LimitExceeded, NotFound, QuotaExceeded
from labservice.jobs import parts
from labservice.jobs.kinds import JobContext, kind_of, parse_request
from labservice.jobs.parts import MANIFEST, PARTS, WORK
from labservice.jobs.registry import ACTIVE, FINAL, JobRecord, JobRegistry
from labservice.jobs.scratch import Scratch

log = logging.getLogger("labservice.jobs")
DAY = 86400.0
MIB = 1 << 20
RETRY_DRAIN_SECONDS = 120.0  # a resumed job waits this long at most for the killed attempt's tasks


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
        Points x times (or steps) of one points or particles task.
    track_segment_steps
        Steps of one tracking window of a particles job (default and at most ``tracking.MAX_STEPS``).
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
        track_segment_steps: int | None = None,
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
        self.track_segment_steps = track_segment_steps
        self.retries = retries
        self.sweep_seconds = sweep_seconds
        self.client: Any = None
        self.cluster: Any = None
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None

    @property
    def context(self) -> JobContext:
        """What the job kinds may use while they check and plan."""
        return JobContext(
            self.scratch, self.resolve_dataset, self.resolve_simulation, self.shard_edge, self.chunk_edge,
            self.task_bytes, self.points_per_task, self.track_segment_steps,
        )  # fmt: skip

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
        pts = _check_points(req.kind, kind.takes_points, points)
        nbytes = kind.check(self.context, req, pts)
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
        try:
            kind.accept(self.context, rec.id, req, pts)
        except Exception as exc:
            self.registry.end(rec.id, "failed", parts.describe(exc))
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
        req = parse_request(rec.params)
        kind = kind_of(req)
        plan = kind.plan(self.context, job_id, req)
        specs = plan.parts
        if not self.registry.start(job_id, total=len(specs)):
            self.scratch.delete(job_id)  # cancelled while planning: drop the skeleton just made
            return
        # One graph for all parts (map runs them in list order): the scheduler takes in a graph per
        # message, one at a time, so per-part submits left a cancel queued behind thousands of them.
        futures = self.client.map(
            kind.run_part,
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
            kind.finalize,
            plan.final,
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
        self.scratch.delete(job_id, PARTS)
        self.scratch.delete(job_id, WORK)
        nbytes = sum(f["size"] for f in files)
        if not self.registry.finish(job_id, files, nbytes, time.time() + self.ttl):
            self.scratch.delete(job_id)  # cancelled while finishing: leave nothing behind

    def _finish_from_manifest(self, job_id: str) -> bool:
        """Record a job done whose finalizer already wrote the manifest (an attempt died after it)."""
        if not self.scratch.exists(job_id, MANIFEST):
            return False
        manifest = json.loads(self.scratch.read_bytes(job_id, MANIFEST))
        entry = self.scratch.checksum(job_id, MANIFEST).to_dict() | {"format": "json"}
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
        if self.registry.end(job_id, "failed", parts.describe(exc)):
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
            running = self.client.run(parts.executing_keys)
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
