"""The job registry: one SQLite database (WAL mode) holding every batch job's state.

The registry is the single source of truth a restarted service recovers from: a job is written here as
``queued`` before any work is submitted, and only becomes ``done`` after its manifest is in the scratch
store. Each call opens its own short-lived connection, so threads (the HTTP handlers, the job monitors and
the expiry sweeper) never share one.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "done", "failed", "cancelled", "expired")
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled", "expired")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id        TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    kind      TEXT NOT NULL,
    params    TEXT NOT NULL,
    status    TEXT NOT NULL,
    done      INTEGER NOT NULL DEFAULT 0,
    total     INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL,
    started   REAL,
    finished  REAL,
    expires   REAL,
    error     TEXT,
    files     TEXT NOT NULL DEFAULT '[]',
    nbytes    INTEGER NOT NULL DEFAULT 0,
    attempts  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
"""

# Active jobs and scratch bytes held or reserved by one owner (the quotas count these).
_USAGE = (
    "SELECT COUNT(CASE WHEN status IN ('queued','running') THEN 1 END),"
    " COALESCE(SUM(CASE WHEN status IN ('queued','running','done') THEN nbytes END), 0)"
    " FROM jobs WHERE owner = ?"
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


class JobRegistry:
    """Jobs in a SQLite file. Safe to use from many threads and several processes.

    Parameters
    ----------
    path
        The database file; created with its folder when missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    @staticmethod
    def _record(row: sqlite3.Row) -> JobRecord:
        d = dict(row)
        d["params"] = json.loads(d["params"])
        d["files"] = json.loads(d["files"])
        return JobRecord(**d)

    # -- create and read ---------------------------------------------------------------------------
    def insert_if_within(
        self,
        owner: str,
        kind: str,
        params: dict[str, Any],
        nbytes: int,
        max_active: int | None,
        max_bytes: int | None,
    ) -> tuple[JobRecord | None, str]:
        """Insert a queued job unless the owner's quotas would be exceeded, atomically.

        Returns ``(record, "")`` or ``(None, reason)`` where reason is ``"jobs"`` or ``"bytes"``. The check
        and the insert run in one write transaction, so concurrent submissions cannot both slip through.
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
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                active, used = db.execute(_USAGE, (owner,)).fetchone()
                if max_active is not None and active >= max_active:
                    db.execute("ROLLBACK")
                    return None, "jobs"
                if max_bytes is not None and used + nbytes > max_bytes:
                    db.execute("ROLLBACK")
                    return None, "bytes"
                db.execute(
                    "INSERT INTO jobs (id, owner, kind, params, status, created, nbytes)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (job.id, owner, kind, json.dumps(params), job.status, job.created, job.nbytes),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return job, ""

    def get(self, job_id: str) -> JobRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._record(row)

    def list(self, owner: str | None = None, statuses: tuple[str, ...] | None = None) -> list[JobRecord]:
        """Jobs, newest first, optionally of one owner and with one of ``statuses``."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args.extend(statuses)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY created DESC", args).fetchall()
        return [self._record(r) for r in rows]

    def usage(self, owner: str) -> tuple[int, int]:
        """(active jobs, scratch bytes held or reserved) of one owner."""
        with self._connect() as db:
            active, used = db.execute(_USAGE, (owner,)).fetchone()
        return int(active), int(used)

    # -- state changes -----------------------------------------------------------------------------
    def start(self, job_id: str, total: int, done: int = 0) -> bool:
        """Mark a queued or running job as running with ``total`` units; False if it is already final."""
        with self._connect() as db:
            cur = db.execute(
                "UPDATE jobs SET status='running', total=?, done=?, started=COALESCE(started, ?),"
                " attempts=attempts+1 WHERE id=? AND status IN ('queued','running')",
                (total, done, time.time(), job_id),
            )
        return cur.rowcount == 1

    def progress(self, job_id: str, done: int) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET done=? WHERE id=? AND status='running'", (done, job_id))

    def finish(self, job_id: str, files: list[dict[str, Any]], nbytes: int, expires: float) -> bool:
        """Record success. Only a running job can become done (never one cancelled meanwhile)."""
        with self._connect() as db:
            cur = db.execute(
                "UPDATE jobs SET status='done', done=total, finished=?, files=?, nbytes=?, expires=?, error=NULL"
                " WHERE id=? AND status='running'",
                (time.time(), json.dumps(files), int(nbytes), expires, job_id),
            )
        return cur.rowcount == 1

    def end(
        self, job_id: str, status: str, error: str | None = None, from_statuses: tuple[str, ...] = ACTIVE
    ) -> bool:
        """Move a job to a final status (failed, cancelled, expired) from one of ``from_statuses``."""
        assert status in FINAL
        with self._connect() as db:
            cur = db.execute(
                f"UPDATE jobs SET status=?, error=COALESCE(?, error), finished=COALESCE(finished, ?),"
                f" nbytes=CASE WHEN ? IN ('failed','cancelled','expired') THEN 0 ELSE nbytes END"
                f" WHERE id=? AND status IN ({','.join('?' * len(from_statuses))})",
                (status, error, time.time(), status, job_id, *from_statuses),
            )
        return cur.rowcount == 1

    def expired(self, now: float | None = None) -> list[JobRecord]:
        """Done jobs whose results are past their expiry time."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE status='done' AND expires IS NOT NULL AND expires <= ?",
                (time.time() if now is None else now,),
            ).fetchall()
        return [self._record(r) for r in rows]
