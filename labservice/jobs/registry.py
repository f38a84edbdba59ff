"""The job registry: every batch job's state, in the platform database (:mod:`labservice.db`).

The registry is the single source of truth a restarted service recovers from: a job is written here as
``queued`` before any work is submitted, and only becomes ``done`` after its manifest is in the scratch
store. Each call runs in its own short transaction on a pooled connection, so threads (the HTTP handlers,
the job monitors and the expiry sweeper) and processes (API workers, engines) never share one.

An engine running as its own service holds a *lease* on each active job it runs (``engine_id``,
``lease_expires``) and renews it with heartbeats; a lease that expires is claimed by another engine.
A cancel is a flag (``cancel_requested``) any API process sets and the owning engine acts on.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from labservice.db import database, migrate
from labservice.db.schema import jobs as J
from labservice.db.schema import quotas as Q

STATUSES = ("queued", "running", "done", "failed", "cancelled", "expired")
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled", "expired")

# Active jobs and scratch bytes held or reserved by one owner (the quotas count these).
_USAGE = sa.select(
    sa.func.count(sa.case((J.c.status.in_(ACTIVE), 1))),
    sa.func.coalesce(sa.func.sum(sa.case((J.c.status.in_((*ACTIVE, "done")), J.c.nbytes))), 0),
)


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class JobRecord:
    """One row of the registry. ``nbytes`` is the scratch space reserved (active) or used (done)."""

    id: str
    owner: str
    kind: str
    params: dict[str, Any]
    status: str
    done: int = 0
    total: int = 0
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    expires: float | None = None
    error: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    nbytes: int = 0
    attempts: int = 0
    engine_id: str | None = None  # the engine holding the lease (engine service), None when unclaimed
    lease_expires: float | None = None
    cancel_requested: bool = False

    @property
    def progress(self) -> float:
        if self.status == "done":
            return 1.0
        return self.done / self.total if self.total else 0.0

    def public(self) -> dict[str, Any]:
        """The JSON the API returns: status, progress, timestamps, error, files and expiry."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": {"fraction": round(self.progress, 6), "done": self.done, "total": self.total},
            "created": _iso(self.created),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "expires": _iso(self.expires),
            "error": self.error,
            "attempts": self.attempts,  # > 1 when the service restarted while the job ran
            "files": [f for f in self.files if not f.get("hidden")],
            "bytes": self.nbytes,
            "params": self.params,
        }


_FIELDS = {f.name for f in fields(JobRecord)}


class JobRegistry:
    """Jobs in the platform database. Safe to use from many threads, processes and hosts.

    Parameters
    ----------
    where
        A database URL (``sqlite:///...``, ``postgresql://...``) or a SQLite file path. An embedded SQLite
        file is created or migrated on the spot; a PostgreSQL database needs ``labservice db upgrade`` first.
    retry_seconds
        How long each call keeps trying to connect while the database is unreachable before it raises
        :class:`~labservice.errors.DatabaseUnavailable` (0: at once, right for HTTP requests; an engine
        passes more so a database restart does not fail its jobs).
    """

    def __init__(self, where: str | Path, retry_seconds: float = 0.0) -> None:
        self.db = database(where)
        self.path = self.db.path  # the SQLite file, None for PostgreSQL
        self.retry_seconds = retry_seconds
        if self.db.is_sqlite:
            migrate(self.db)

    def _tx(self, write: bool = False):  # type: ignore[no-untyped-def]
        return self.db.connect(write=write, retry_seconds=self.retry_seconds)

    @staticmethod
    def _record(row: Any) -> JobRecord:
        d = {k: v for k, v in row._mapping.items() if k in _FIELDS}
        d["params"] = json.loads(d["params"])
        d["files"] = json.loads(d["files"])
        d["cancel_requested"] = bool(d.get("cancel_requested"))
        return JobRecord(**d)

    def _update(self, where: Any, **values: Any) -> int:
        with self._tx(write=True) as conn:
            return conn.execute(J.update().where(where).values(**values)).rowcount

    # -- create and read ---------------------------------------------------------------------------
    def insert_if_within(
        self,
        owner: str,
        kind: str,
        params: dict[str, Any],
        nbytes: int,
        max_active: int | None,
        max_bytes: int | None,
        held_by: str | None = None,
        hold_seconds: float = 0.0,
    ) -> tuple[JobRecord | None, str]:
        """Insert a queued job unless the owner's quotas would be exceeded, atomically.

        Returns ``(record, "")`` or ``(None, reason)`` where reason is ``"jobs"`` or ``"bytes"``. The check
        and the insert run in one write transaction that holds the owner's quota row locked (PostgreSQL:
        SELECT ... FOR UPDATE; SQLite: BEGIN IMMEDIATE), so concurrent submissions cannot both slip through.
        ``held_by`` inserts it leased to that name for ``hold_seconds``: no engine claims the job before
        its submitter has stored its inputs and released it.
        """
        job = JobRecord(
            id=uuid.uuid4().hex[:16],
            owner=owner,
            kind=kind,
            params=params,
            status="queued",
            created=time.time(),
            nbytes=int(nbytes),
        )
        with self._tx(write=True) as conn:
            if not self.db.is_sqlite:
                conn.execute(
                    pg_insert(Q)
                    .values(owner=owner, created=job.created)
                    .on_conflict_do_nothing(index_elements=["owner"])
                )
                conn.execute(sa.select(Q.c.owner).where(Q.c.owner == owner).with_for_update())
            active, used = conn.execute(_USAGE.where(J.c.owner == owner)).one()
            if max_active is not None and active >= max_active:
                conn.rollback()
                return None, "jobs"
            if max_bytes is not None and used + nbytes > max_bytes:
                conn.rollback()
                return None, "bytes"
            conn.execute(J.insert().values(
                id=job.id, owner=owner, kind=kind, params=json.dumps(params), status=job.status,
                created=job.created, nbytes=job.nbytes, engine_id=held_by,
                lease_expires=job.created + hold_seconds if held_by else None,
            ))  # fmt: skip
        return job, ""

    def get(self, job_id: str) -> JobRecord | None:
        with self._tx() as conn:
            row = conn.execute(sa.select(J).where(J.c.id == job_id)).first()
        return None if row is None else self._record(row)

    def list(self, owner: str | None = None, statuses: tuple[str, ...] | None = None) -> list[JobRecord]:
        """Jobs, newest first, optionally of one owner and with one of ``statuses``."""
        q = sa.select(J)
        if owner is not None:
            q = q.where(J.c.owner == owner)
        if statuses:
            q = q.where(J.c.status.in_(statuses))
        with self._tx() as conn:
            rows = conn.execute(q.order_by(J.c.created.desc())).all()
        return [self._record(r) for r in rows]

    def usage(self, owner: str) -> tuple[int, int]:
        """(active jobs, scratch bytes held or reserved) of one owner."""
        with self._tx() as conn:
            active, used = conn.execute(_USAGE.where(J.c.owner == owner)).one()
        return int(active), int(used)

    def count_by_status(self) -> dict[str, int]:
        """Jobs per status (every status present, zeros included), for the metrics."""
        with self._tx() as conn:
            rows = conn.execute(sa.select(J.c.status, sa.func.count()).group_by(J.c.status)).all()
        return {s: 0 for s in STATUSES} | {r[0]: int(r[1]) for r in rows}

    # -- state changes -----------------------------------------------------------------------------
    def start(self, job_id: str, total: int, done: int = 0) -> bool:
        """Mark a queued or running job as running with ``total`` units; False if it is already final.

        Each call counts one attempt (a job resumed after a restart or a lease takeover shows attempts > 1).
        """
        return self._update(
            (J.c.id == job_id) & J.c.status.in_(ACTIVE),
            status="running", total=total, done=done,
            started=sa.func.coalesce(J.c.started, time.time()), attempts=J.c.attempts + 1,
        ) == 1  # fmt: skip

    def progress(self, job_id: str, done: int) -> None:
        self._update((J.c.id == job_id) & (J.c.status == "running"), done=done)

    def finish(self, job_id: str, files: list[dict[str, Any]], nbytes: int, expires: float) -> bool:
        """Record success. Only a running job can become done (never one cancelled meanwhile)."""
        return self._update(
            (J.c.id == job_id) & (J.c.status == "running"),
            status="done", done=J.c.total, finished=time.time(), files=json.dumps(files), nbytes=int(nbytes),
            expires=expires, error=None,
        ) == 1  # fmt: skip

    def end(
        self, job_id: str, status: str, error: str | None = None, from_statuses: tuple[str, ...] = ACTIVE
    ) -> bool:
        """Move a job to a final status (failed, cancelled, expired) from one of ``from_statuses``."""
        assert status in FINAL
        values: dict[str, Any] = {
            "status": status,
            "error": sa.func.coalesce(error, J.c.error),
            "finished": sa.func.coalesce(J.c.finished, time.time()),
        }
        if status in ("failed", "cancelled", "expired"):
            values["nbytes"] = 0
        return self._update((J.c.id == job_id) & J.c.status.in_(from_statuses), **values) == 1

    def expired(self, now: float | None = None) -> list[JobRecord]:
        """Done jobs whose results are past their expiry time."""
        now = time.time() if now is None else now
        q = sa.select(J).where((J.c.status == "done") & J.c.expires.is_not(None) & (J.c.expires <= now))
        with self._tx() as conn:
            rows = conn.execute(q).all()
        return [self._record(r) for r in rows]

    # -- leases (an engine running as its own service) ---------------------------------------------
    @staticmethod
    def _claimable(engine_id: str, now: float) -> Any:
        """Active, and unclaimed, already ours, or with a lease that has run out."""
        return J.c.status.in_(ACTIVE) & (
            J.c.engine_id.is_(None) | (J.c.engine_id == engine_id) | (J.c.lease_expires < now)
        )

    def claim(self, job_id: str, engine_id: str, ttl: float) -> bool:
        """Take the lease of an active job for ``ttl`` seconds; False when another engine holds a live one.

        One UPDATE, so two engines claiming at once cannot both win. ``attempts`` is left to :meth:`start`.
        """
        now = time.time()
        return (
            self._update(
                (J.c.id == job_id) & self._claimable(engine_id, now),
                engine_id=engine_id,
                lease_expires=now + ttl,
            )
            == 1
        )

    def claim_next(self, engine_id: str, ttl: float, limit: int = 16) -> list[JobRecord]:
        """Claim up to ``limit`` active jobs (oldest first) whose lease is free or expired; the claimed ones."""
        now = time.time()
        q = (
            sa.select(J.c.id)
            .where(self._claimable(engine_id, now) & ((J.c.engine_id != engine_id) | J.c.engine_id.is_(None)))
            .order_by(J.c.created)
            .limit(limit)
        )
        with self._tx() as conn:
            ids = [r[0] for r in conn.execute(q)]
        won = [i for i in ids if self.claim(i, engine_id, ttl)]
        return [r for r in (self.get(i) for i in won) if r is not None]

    def heartbeat(self, engine_id: str, job_ids: Any, ttl: float) -> set[str]:
        """Renew the leases ``engine_id`` still holds among ``job_ids``; the ids still held (and active)."""
        ids = list(job_ids)
        if not ids:
            return set()
        mine = J.c.id.in_(ids) & (J.c.engine_id == engine_id) & J.c.status.in_(ACTIVE)
        with self._tx(write=True) as conn:
            conn.execute(J.update().where(mine).values(lease_expires=time.time() + ttl))
            return {r[0] for r in conn.execute(sa.select(J.c.id).where(mine))}

    def release(self, job_id: str, engine_id: str) -> None:
        """Give a lease up (the engine stops, or the job ended) so another engine may claim it at once.

        Clears the job's cancel request too: the engine that held it has acted on it.
        """
        self._update(
            (J.c.id == job_id) & (J.c.engine_id == engine_id),
            engine_id=None,
            lease_expires=None,
            cancel_requested=0,
        )

    def owned(self, engine_id: str) -> list[JobRecord]:
        """Active jobs whose lease ``engine_id`` holds."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(J)
                .where((J.c.engine_id == engine_id) & J.c.status.in_(ACTIVE))
                .order_by(J.c.created)
            ).all()
        return [self._record(r) for r in rows]

    def request_cancel(self, job_id: str) -> bool:
        """Ask the engine running an active job to cancel it; False when the job is not active."""
        return self._update((J.c.id == job_id) & J.c.status.in_(ACTIVE), cancel_requested=1) == 1

    def cancel_requested(self, job_ids: Any) -> set[str]:
        """The ids among ``job_ids`` whose cancel was requested (whatever their status; release() clears it)."""
        ids = list(job_ids)
        if not ids:
            return set()
        with self._tx() as conn:
            rows = conn.execute(sa.select(J.c.id).where(J.c.id.in_(ids) & (J.c.cancel_requested != 0)))
            return {r[0] for r in rows}
