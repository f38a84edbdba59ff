"""The job engine: validate, register, split into parts, run them on Dask, commit, resume, cancel, expire.

:class:`JobEngine` owns a Dask client (an embedded ``LocalCluster`` of processes by default, or an existing
scheduler), the :class:`~labservice.jobs.registry.JobRegistry` and the
:class:`~labservice.jobs.scratch.Scratch` store; the API side of it (submit, read, cancel, files) is
:class:`~labservice.jobs.front.JobFront`, which an API process uses alone when the engine runs as its own
service (:mod:`labservice.jobs.service`). It knows no job kind by name: it looks the request's
kind up in :data:`labservice.jobs.kinds.KINDS` and calls its ``check``, ``accept``, ``plan``, ``run_part``
and ``finalize``. Each job gets a monitor thread that plans it, submits all its parts as one graph,
counts finished parts into the registry and runs the finalizer.

Life of a job: ``queued`` (registered, nothing submitted) -> ``running`` (parts submitted) -> ``done`` (every
part committed, manifest written) or ``failed`` (error text kept) or ``cancelled``; a ``done`` job becomes
``expired`` when its time-to-live passes and its files are deleted. An engine runs a job under a lease
in the database (:mod:`labservice.jobs.lease`), renewed by heartbeats; a job whose lease ran out (its
engine died) or was released (its engine stopped) is claimed by the next engine that looks, which
resubmits it: committed parts are skipped, so the job resumes where it was, and a job whose manifest was
written before the crash is recorded done without running again. Several engines may run at once: they
split the jobs by their claims.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labservice.errors import LabError
from labservice.jobs import parts
from labservice.jobs.front import MIB, JobFront, JobLimits
from labservice.jobs.kinds import kind_of, parse_request
from labservice.jobs.lease import LeaseLoop, new_engine_id
from labservice.jobs.parts import MANIFEST, PARTS, WORK
from labservice.jobs.registry import ACTIVE

__all__ = ["JobEngine", "JobLimits"]

log = logging.getLogger("labservice.jobs")
SCHEDULER_WAIT_SECONDS = 120.0  # a job waits this long for a lost Dask scheduler before it fails
RETRY_DRAIN_SECONDS = 120.0  # a resumed job waits this long at most for the killed attempt's tasks


class SchedulerLost(Exception):
    """The Dask scheduler went away (or restarted) under a running job: its futures are gone with it."""


@dataclass
class _Live:
    """What the engine holds for a job it is running."""

    thread: threading.Thread
    futures: list[Any]
    session: str
    stop: threading.Event = field(default_factory=threading.Event)  # lease lost or cancelled: stop
    cancelling: bool = False


class JobEngine(JobFront):
    """Runs batch jobs on a Dask cluster and keeps their state in the job registry.

    Parameters
    ----------
    registry_path
        The job registry (SQLite file or database URL).
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
    lease_seconds
        How long a claim on a job lasts without a heartbeat; another engine takes the job over after it.
    poll_seconds
        How often the engine looks for cancels and for jobs to claim.
    max_jobs
        Jobs this engine runs at once; more stay queued for it or another engine.
    engine_id
        This engine's name in the database (default: host-pid-random).
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
        lease_seconds: float = 10.0,
        poll_seconds: float = 0.5,
        max_jobs: int = 16,
        engine_id: str | None = None,
    ) -> None:
        super().__init__(
            registry_path, scratch_url, scratch_options, resolve_dataset, resolve_simulation, ttl_days,
            shard_edge, chunk_edge, task_bytes, points_per_task, track_segment_steps, lease_seconds,
        )  # fmt: skip
        self.scheduler = scheduler
        self.n_workers, self.threads_per_worker, self.worker_memory = (
            n_workers,
            threads_per_worker,
            worker_memory,
        )
        self.retries = retries
        self.sweep_seconds = sweep_seconds
        self.poll_seconds, self.max_jobs = poll_seconds, max_jobs
        self.engine_id = engine_id or new_engine_id()
        self.client: Any = None
        self.cluster: Any = None
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        self._claim_lock = threading.Lock()
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._leaser: LeaseLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> JobEngine:
        """Connect to (or start) the cluster, start claiming jobs (unfinished ones resume) and the sweeper."""
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
            held = rec.engine_id and (rec.lease_expires or 0.0) >= time.time()  # its engine cleans up
            if rec.finished and time.time() - rec.finished < self.ttl and not held:
                self.scratch.delete(rec.id)  # a crash during cancel may have left parts behind
        self._claim()  # jobs left queued or running by a stopped engine resume now, before the first poll
        self._leaser = LeaseLoop(
            self.leases, self.engine_id, self._held, self._lost, self._cancel_requested, self._claim,
            self._stopping, self.poll_seconds,
        )  # fmt: skip
        self._leaser.start()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="labservice-job-sweeper", daemon=True)
        self._sweeper.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop running jobs here and close the cluster. Their leases are released: they stay ``running``
        and resume at once on another engine, or on this one at its next start."""
        self._stopping.set()
        if self._leaser is not None:
            self._leaser.join(timeout)
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

    # -- claims, leases and cancels ----------------------------------------------------------------
    def _accepted(self, job_id: str, holder: str) -> None:
        """Run a new job here at once when there is room; else put it in the queue for any engine."""
        with self._claim_lock:
            room = not self._stopping.is_set() and self.client is not None and len(self._live) < self.max_jobs
            if room and self.leases.claim(job_id, self.engine_id):  # ours: from the hold to a lease
                self._launch(job_id)
                return
        self._let_go(job_id, holder)

    def _claim(self) -> None:
        """Claim queued jobs and jobs whose engine died, up to ``max_jobs`` running here."""
        with self._claim_lock:
            if self._stopping.is_set():
                return
            for rec in self.leases.claim_next(self.engine_id, self.max_jobs - len(self._live)):
                if rec.id in self._live:
                    continue  # ours already (a claim racing a submit)
                log.info("resuming job %s (%s)" if rec.status == "running" else "starting job %s (%s)",
                         rec.id, rec.status)  # fmt: skip
                self._launch(rec.id)

    def _held(self) -> list[str]:
        with self._lock:
            return list(self._live)

    def _lost(self, job_id: str) -> None:
        """Our lease on a job is gone: it was cancelled, or another engine took it over."""
        rec = self.registry.get(job_id)
        if rec is not None and rec.status == "cancelled":
            self._cancel_requested(job_id)
            return
        with self._lock:
            live = self._live.get(job_id)
        if live is None:
            return
        log.warning("job %s: lease lost (now %s); stopping its tasks here", job_id, rec and rec.status)
        live.stop.set()
        if self.client is not None and live.futures:
            self.client.cancel(live.futures, force=True)

    def _cancel_requested(self, job_id: str) -> None:
        """Cancel a job this engine runs, whichever process received the cancel (in a thread of its own)."""
        with self._lock:
            live = self._live.get(job_id)
            if live is None or live.cancelling:
                return
            live.cancelling = True
        log.info("job %s: cancel requested; stopping its tasks", job_id)
        threading.Thread(
            target=self._cancel_here, args=(job_id, live, 30.0), name=f"labservice-cancel-{job_id}",
            daemon=True,
        ).start()

    def _cancel_here(self, job_id: str, live: _Live, timeout: float) -> None:
        try:
            self.registry.end(job_id, "cancelled", "cancelled by its owner")  # done already by the API
            self.scratch.tombstone(job_id)
            self._stop_live(job_id, live, timeout)
            self._delete_all(job_id)
        except Exception:  # the start-up clean-up of a later engine deletes what is left
            log.exception("job %s: clean-up after cancel failed", job_id)
        finally:
            self.leases.release(job_id, self.engine_id)

    def cancel(self, owner: str | None, job_id: str, timeout: float = 30.0) -> Any:
        try:
            return super().cancel(owner, job_id, timeout)
        finally:
            self.leases.release(job_id, self.engine_id)  # if it was ours: cancelled and cleaned up now

    def _stop_here(self, job_id: str, timeout: float) -> bool:
        with self._lock:
            live = self._live.get(job_id)
            if live is not None:
                live.cancelling = True
        if live is None:
            return False
        self._stop_live(job_id, live, timeout)
        return True

    def _stop_live(self, job_id: str, live: _Live, timeout: float) -> None:
        live.stop.set()
        if self.client is not None:
            self.client.cancel(live.futures, force=True)
            self._drain(job_id, timeout)

    def _ours(self, job_id: str) -> bool:
        """Whether we still hold the job's lease (checked before the steps a stale engine must not take)."""
        return job_id in self.leases.heartbeat(self.engine_id, [job_id])

    # -- running -----------------------------------------------------------------------------------
    def _launch(self, job_id: str) -> None:
        session = uuid.uuid4().hex[:8]
        if self._stopping.is_set():
            return
        thread = threading.Thread(
            target=self._run, args=(job_id, session), name=f"labservice-job-{job_id}", daemon=True
        )
        with self._lock:
            self._live[job_id] = _Live(thread, [], session)
        thread.start()

    def _run(self, job_id: str, session: str) -> None:
        with self._lock:
            stop = self._live[job_id].stop
        try:
            self._run_job(job_id, session, stop)
        except CancelledError:
            pass  # a future was cancelled between its status check and its result: cancel() cleans up
        except SchedulerLost as exc:
            # Handed back (the lease is released below): the next claim plans it again once the scheduler
            # is back, and committed parts are skipped, so nothing is lost or done twice.
            log.warning("job %s: %s; it resumes from its committed parts", job_id, exc)
        except Exception as exc:  # the job fails with the reason; the service keeps going
            if self._stopping.is_set() or stop.is_set():
                pass  # stopped on purpose: the job resumes on the engine that holds it next
            elif _scheduler_gone(exc):
                log.warning("job %s: the Dask scheduler connection broke (%s); it resumes from its committed "
                            "parts", job_id, exc)  # fmt: skip
            elif _database_down(exc):
                log.warning("job %s: the database is unreachable (%s); it resumes when its lease expires",
                            job_id, exc)  # fmt: skip
            else:
                log.exception("job %s failed", job_id)
                self._fail(job_id, exc)
        finally:
            with self._lock:
                live = self._live.get(job_id)
                mine = live is not None and live.session == session
                if mine:
                    del self._live[job_id]
            if mine and not live.cancelling:  # type: ignore[union-attr]  # a cancel releases when it is done
                try:
                    self.leases.release(job_id, self.engine_id)
                except Exception:  # the lease then expires on its own
                    log.warning("job %s: could not release its lease; it expires by itself", job_id)

    def _run_job(self, job_id: str, session: str, stop: threading.Event) -> None:
        from distributed import as_completed

        rec = self.registry.get(job_id)
        if rec is None or rec.status not in ACTIVE:
            return
        if self._finish_from_manifest(job_id):
            return
        req = parse_request(rec.params)
        kind = kind_of(req)
        plan = kind.plan(replace(self.context, owner=rec.owner), job_id, req)
        specs = plan.parts
        if not self.registry.start(job_id, total=len(specs)):
            self.scratch.delete(job_id)  # cancelled while planning: drop the skeleton just made
            return
        scheduler = self._scheduler_id(stop)
        if scheduler is None:
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
        if stop.is_set():  # cancelled while the graph was on its way
            self.client.cancel(futures, force=True)
            return
        completed, done, records = as_completed(futures, loop=self.client.loop, raise_errors=False), 0, []
        while not completed.is_empty():
            finished = self._next_batch(completed, stop, scheduler)
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
                self._progress(job_id, done)
        rec_now = self.registry.get(job_id)
        if rec_now is None or rec_now.status != "running" or not self._ours(job_id):
            return  # cancelled, or taken over by another engine: not ours to finalize
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
        waiting = as_completed([fin], loop=self.client.loop, raise_errors=False)
        if self._next_batch(waiting, stop, scheduler) is None:
            return
        if fin.status == "cancelled" or not self._ours(job_id):
            return
        self._finish(job_id, fin.result())

    def _finish(self, job_id: str, files: list[dict[str, Any]]) -> None:
        # Clean up before the job is recorded done, so a done job never shows working entries. A crash
        # in between is resumed by _finish_from_manifest: the manifest is the finalizer's last write.
        self.scratch.delete(job_id, PARTS)
        self.scratch.delete(job_id, WORK)
        nbytes = sum(f["size"] for f in files)
        if not self.registry.finish(job_id, files, nbytes, time.time() + self.ttl):
            rec = self.registry.get(job_id)
            if rec is None or rec.status != "done":  # done: another engine finished it, keep its files
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

    def _progress(self, job_id: str, done: int) -> None:
        try:
            self.registry.progress(job_id, done)
        except Exception as exc:  # progress is advisory: a database blip must not fail the job
            if not _database_down(exc):
                raise
            log.warning("job %s: progress not recorded (%s)", job_id, exc)

    def _scheduler_id(self, stop: threading.Event) -> str | None:
        """The id of the scheduler the client is connected to, waiting (bounded) while it reconnects."""
        deadline = time.monotonic() + SCHEDULER_WAIT_SECONDS
        while not self._stopping.is_set() and not stop.is_set():
            if self.client.status == "running":
                return str(self.client.scheduler_info().get("id"))
            if self.client.status == "closed" and self.scheduler:  # it gave up reconnecting: a new client
                self._reconnect()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Dask scheduler {self.scheduler} did not come back within "
                                   f"{SCHEDULER_WAIT_SECONDS:.0f} s")  # fmt: skip
            time.sleep(0.2)
        return None

    def _reconnect(self) -> None:
        from distributed import Client

        with self._lock:
            if self.client.status != "closed":
                return  # another job's thread got there first
            try:
                self.client = Client(self.scheduler, set_as_default=False, timeout=5)
                log.info("engine %s: connected again to %s", self.engine_id, self.scheduler)
            except (OSError, TimeoutError) as exc:
                log.warning("engine %s: the Dask scheduler is still away (%s)", self.engine_id, exc)

    def _next_batch(
        self, completed: Any, stop: threading.Event, scheduler: str | None = None
    ) -> list[Any] | None:
        """Futures finished so far (waiting for at least one), or None when the engine or the job stops.

        Raises :class:`SchedulerLost` when the client lost its scheduler or reconnected to a new one (a
        restart forgets every task; a graph sent meanwhile may never arrive): the job is handed back.
        """
        checked = time.monotonic()
        while not self._stopping.is_set() and not stop.is_set():
            if completed.has_ready():
                return list(completed.next_batch(block=False))
            if scheduler is not None and time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                if self.client.status != "running":
                    raise SchedulerLost(f"the client lost the Dask scheduler ({self.client.status})")
                if str(self.client.scheduler_info().get("id")) != scheduler:
                    raise SchedulerLost("the Dask scheduler restarted")
            with completed.thread_condition:  # woken as soon as a future finishes (a sleep added up to 50 ms)
                if not completed.has_ready():
                    completed.thread_condition.wait(0.05)
        return None

    def _fail(self, job_id: str, exc: BaseException) -> None:
        if not self._ours(job_id):
            return  # cancelled, or taken over by another engine: not ours to fail
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


def _scheduler_gone(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the client's connection to the scheduler closing."""
    from distributed.comm.core import CommClosedError

    for _ in range(10):
        if exc is None:
            return False
        if isinstance(exc, (CommClosedError, SchedulerLost)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _database_down(exc: BaseException) -> bool:
    """Whether an error says the platform database cannot be reached (a blip, not the job's fault)."""
    from labservice import errors

    down = getattr(errors, "DatabaseUnavailable", None)
    return down is not None and isinstance(exc, down)
