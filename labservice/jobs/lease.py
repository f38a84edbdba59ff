"""Job leases: which engine runs which job, kept alive by heartbeats in the platform database.

An engine claims a queued job (or one whose lease expired: its engine died) for ``lease_seconds`` and
renews the claim every fraction of that while the job runs. Another engine takes over a job whose lease
ran out; it resumes from the committed parts. A cancel sets a flag on the job; the engine holding it sees
the flag on its next poll and stops the job's Dask tasks. :class:`Leases` calls the registry's lease
methods (the platform database); :class:`LeaseLoop` is the engine's thread that renews, claims and
watches for cancels.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("labservice.jobs")

def new_engine_id() -> str:
    """host-pid-random: names the process in logs and in the database, unique across restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Leases:
    """The registry's lease calls for engines holding ``lease_seconds`` leases."""

    def __init__(self, registry: Any, lease_seconds: float) -> None:
        self.registry = registry
        self.ttl = float(lease_seconds)

    def claim(self, job_id: str, engine: str) -> bool:
        """Take one active job whose lease is free, expired or already ours."""
        return bool(self.registry.claim(job_id, engine, self.ttl))

    def claim_next(self, engine: str, limit: int) -> list[Any]:
        """Claim up to ``limit`` active jobs, oldest first, whose lease is free or expired."""
        return list(self.registry.claim_next(engine, self.ttl, limit=limit)) if limit > 0 else []

    def heartbeat(self, engine: str, job_ids: Iterable[str]) -> set[str]:
        """Renew our leases; returns the ids still ours and active (the others: stop working on them)."""
        ids = list(job_ids)
        return set(self.registry.heartbeat(engine, ids, self.ttl)) if ids else set()

    def release(self, job_id: str, engine: str) -> None:
        """Give a job back (finished, failed, or the engine stops): another engine may take it at once."""
        self.registry.release(job_id, engine)

    def request_cancel(self, job_id: str) -> bool:
        """Flag an active job for its engine to cancel."""
        return bool(self.registry.request_cancel(job_id))

    def cancel_requested(self, job_ids: Iterable[str]) -> set[str]:
        """The ids among ``job_ids`` whose cancel was requested."""
        ids = list(job_ids)
        return set(self.registry.cancel_requested(ids)) if ids else set()

    def holder(self, job_id: str) -> str | None:
        """The engine holding a live lease on the job, or None."""
        rec = self.registry.get(job_id)
        if rec is None or not rec.engine_id or (rec.lease_expires or 0.0) < time.time():
            return None
        return str(rec.engine_id)


class LeaseLoop(threading.Thread):
    """The engine's lease thread: renew held leases, pass on cancels and lost jobs, claim new jobs.

    Parameters
    ----------
    leases, engine
        The lease calls and this engine's id.
    held
        The ids of the jobs this engine runs now.
    on_lost
        Called with a job id no longer ours: cancelled, ended elsewhere, or taken over.
    on_cancel
        Called with a job id whose cancel was requested.
    claim
        Called each round to claim and start queued or orphaned jobs.
    poll_seconds
        Period of the cancel check and the claim; renewals run every quarter lease.
    """

    def __init__(
        self,
        leases: Leases,
        engine: str,
        held: Callable[[], list[str]],
        on_lost: Callable[[str], None],
        on_cancel: Callable[[str], None],
        claim: Callable[[], None],
        stopping: threading.Event,
        poll_seconds: float = 0.5,
    ) -> None:
        super().__init__(name=f"labservice-leases-{engine}", daemon=True)
        self.leases, self.engine = leases, engine
        self.held, self.on_lost, self.on_cancel, self.claim = held, on_lost, on_cancel, claim
        self.stopping = stopping
        self.poll = poll_seconds
        self.renew_every = max(0.1, leases.ttl / 4)

    def run(self) -> None:
        last_renewal, failing = 0.0, False
        while not self.stopping.is_set():
            try:
                ids = self.held()
                for job_id in self.leases.cancel_requested(ids):
                    self.on_cancel(job_id)
                if time.monotonic() - last_renewal >= self.renew_every:
                    ids = self.held()  # after the cancels, which drop jobs
                    kept = self.leases.heartbeat(self.engine, ids)
                    last_renewal = time.monotonic()
                    for job_id in set(ids) - kept:
                        self.on_lost(job_id)
                self.claim()
                if failing:
                    log.info("engine %s: the database answers again", self.engine)
                failing = False
            except Exception as exc:  # a database outage must not end the loop: the next round retries
                if not failing:  # once per outage, not every poll
                    log.warning("engine %s: lease round failed (%s); retrying every %.1f s",
                                self.engine, exc, self.poll, exc_info=True)  # fmt: skip
                failing = True
            self.stopping.wait(self.poll)
