"""UWS 1.1 for TAP's async jobs: the PENDING store, the phase rules, and the uws:job / uws:jobs documents.

The job engine has no PENDING state (a submitted job runs), so a UWS job lives in the platform database's
``tap_jobs`` table from its creation; its PHASE=RUN submits a ``tap`` job to the engine and records that job's id. From then on the phase is the
engine job's status (queued -> QUEUED, running -> EXECUTING, done -> COMPLETED, failed -> ERROR, cancelled
-> ABORTED, expired -> ARCHIVED), so the engine's limits, quotas, TTL and fault handling apply.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import sqlalchemy as sa

from labservice.db import database, migrate
from labservice.db.schema import tap_jobs as TJ
from labservice.errors import InvalidInput, NotFound

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ACTIVE = ("PENDING", "QUEUED", "EXECUTING")
_ENGINE_PHASES = {"queued": "QUEUED", "running": "EXECUTING", "done": "COMPLETED", "failed": "ERROR",
                  "cancelled": "ABORTED", "expired": "ARCHIVED"}
PARAMETERS = ("LANG", "QUERY", "FORMAT", "RESPONSEFORMAT", "MAXREC", "REQUEST", "RUNID")

class PhaseConflict(InvalidInput):
    """A UWS request that makes no sense in the job's phase (UWS answers an HTTP error)."""

    code = "phase_conflict"


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(value: str) -> float:
    try:
        text = value.strip().replace("Z", "+00:00")
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"DESTRUCTION must be an ISO 8601 time such as 2030-01-01T00:00:00Z; got {value[:40]!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


@dataclass
class UwsJob:
    id: str
    owner: str
    params: dict[str, str]
    created: float
    duration: float
    destruction: float
    job: str | None = None
    aborted: bool = False
    error: str | None = None
    # filled from the engine's record
    phase: str = "PENDING"
    started: float | None = None
    finished: float | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


class UwsStore:
    """The UWS jobs in the platform database (table ``tap_jobs``), seen alike by every process and host.

    ``where`` is the job registry's database: a URL (``sqlite:///...``, ``postgresql://...``) or a SQLite
    file path. An embedded SQLite file is migrated on the spot, as the registry does.
    """

    def __init__(self, where: str | Path) -> None:
        self.db = database(where)
        if self.db.is_sqlite:
            migrate(self.db)

    def create(self, owner: str, params: dict[str, str], duration: float, ttl: float) -> UwsJob:
        now = time.time()
        job = UwsJob(uuid.uuid4().hex[:16], owner, params, now, duration, now + ttl)
        with self.db.connect(write=True) as conn:
            conn.execute(TJ.insert().values(id=job.id, owner=owner, params=json.dumps(params), created=now,
                                            duration=duration, destruction=job.destruction))
        return job

    def get(self, owner: str | None, job_id: str) -> UwsJob:
        """A job of this owner; NotFound for unknown, deleted and other owners' jobs alike."""
        with self.db.connect() as conn:
            row = conn.execute(sa.select(TJ).where(TJ.c.id == job_id, TJ.c.deleted == 0)).first()
        if row is None or owner is None or row.owner != owner:
            raise NotFound(f"no TAP job {job_id!r} among your jobs; GET .../tap/async lists them")
        return UwsJob(row.id, row.owner, json.loads(row.params), row.created, row.duration, row.destruction,
                      row.job, bool(row.aborted), row.error)  # fmt: skip

    def list(self, owner: str | None) -> list[UwsJob]:
        if owner is None:
            return []
        query = sa.select(TJ.c.id).where(TJ.c.owner == owner, TJ.c.deleted == 0).order_by(TJ.c.created.desc())
        with self.db.connect() as conn:
            ids = list(conn.execute(query).scalars())
        return [self.get(owner, i) for i in ids]

    def update(self, job_id: str, **values: Any) -> None:
        if "params" in values:
            values["params"] = json.dumps(values["params"])
        with self.db.connect(write=True) as conn:
            conn.execute(TJ.update().where(TJ.c.id == job_id).values(**values))

    def claim_run(self, job_id: str) -> bool:
        """Mark a PENDING job as being started (only one PHASE=RUN wins, on whichever host)."""
        pending = (TJ.c.id == job_id, TJ.c.job.is_(None), TJ.c.aborted == 0, TJ.c.error.is_(None))
        with self.db.connect(write=True) as conn:
            return conn.execute(TJ.update().where(*pending).values(job="starting")).rowcount == 1


def resolve(job: UwsJob, record: Any) -> UwsJob:
    """Fill the job's phase, times and results from the engine's record (None: not submitted)."""
    if job.error is not None:
        job.phase = "ERROR"
    elif job.aborted and job.job in (None, "starting"):
        job.phase = "ABORTED"
    elif job.job in (None, "starting"):
        job.phase = "PENDING" if job.job is None else "QUEUED"
    elif record is None:
        job.phase = "ARCHIVED"
    else:
        job.phase = _ENGINE_PHASES.get(record.status, "UNKNOWN")
        job.started, job.finished = record.started, record.finished
        files = [f for f in record.files if f.get("name", "").startswith(("result.", "error."))]
        errors = [f for f in files if "error" in f]
        if job.phase == "COMPLETED" and errors:
            job.phase, job.error = "ERROR", errors[0]["error"]
        elif job.phase == "COMPLETED":
            job.results = files
        elif job.phase == "ERROR":
            job.error = record.error
        elif job.phase == "ABORTED":
            job.error = None
    return job


def _el(name: str, value: Any) -> str:
    if value is None:
        return f'<uws:{name} xsi:nil="true"/>'
    return f"<uws:{name}>{escape(str(value))}</uws:{name}>"


def job_xml(job: UwsJob, base: str) -> bytes:
    """The uws:job document (UWS 1.1)."""
    href = f"{base}/async/{job.id}"
    params = "".join(
        f"<uws:parameter id={quoteattr(k.lower())}>{escape(v)}</uws:parameter>" for k, v in sorted(job.params.items())
    )
    results = "".join(
        f'<uws:result id="result" xlink:href={quoteattr(href + "/results/result")} size="{int(r.get("size", 0))}"/>'
        for r in job.results[:1]
    )
    error = ""
    if job.phase == "ERROR":
        error = (f'<uws:errorSummary type="fatal" hasDetail="true"><uws:message>{escape(job.error or "failed")}'
                 "</uws:message></uws:errorSummary>")
    quote = iso(job.created + job.duration) if job.phase in ACTIVE else None
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:job xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK}" '
        f'xmlns:xsi="{XSI}" version="1.1">'
        + _el("jobId", job.id) + _el("runId", job.params.get("RUNID")) + _el("ownerId", None) + _el("phase", job.phase)
        + _el("quote", quote) + _el("creationTime", iso(job.created)) + _el("startTime", iso(job.started))
        + _el("endTime", iso(job.finished)) + _el("executionDuration", int(job.duration))
        + _el("destruction", iso(job.destruction))
        + f"<uws:parameters>{params}</uws:parameters><uws:results>{results}</uws:results>{error}</uws:job>\n"
    )
    return body.encode()


def jobs_xml(jobs: list[UwsJob], base: str) -> bytes:
    """The uws:jobs list."""
    refs = "".join(
        f'<uws:jobref id={quoteattr(j.id)} xlink:href={quoteattr(f"{base}/async/{j.id}")}>'
        + _el("phase", j.phase) + _el("creationTime", iso(j.created)) + "</uws:jobref>"
        for j in jobs
    )
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:jobs xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK}" '
            f'xmlns:xsi="{XSI}" version="1.1">{refs}</uws:jobs>\n').encode()


def check_phase_request(phase: str, current: str) -> str:
    """The action for a PHASE value in the current phase: 'run', 'abort' or 'none'; PhaseConflict otherwise."""
    want = phase.strip().upper()
    if want == "RUN":
        if current == "PENDING":
            return "run"
        if current in ("QUEUED", "EXECUTING"):
            return "none"  # already running: UWS lets a repeated RUN be a no-op
        raise PhaseConflict(f"PHASE=RUN needs a PENDING job; this one is {current}. Create a new job to run again")
    if want == "ABORT":
        if current in ACTIVE:
            return "abort"
        raise PhaseConflict(f"PHASE=ABORT needs a PENDING, QUEUED or EXECUTING job; this one is {current}")
    if want == "SUSPEND":
        raise PhaseConflict("PHASE=SUSPEND is not supported: a query cannot be suspended; ABORT it instead")
    raise PhaseConflict(f"PHASE must be RUN or ABORT; got {phase[:40]!r}")


__all__ = ["ACTIVE", "PhaseConflict", "UwsJob", "UwsStore", "check_phase_request", "job_xml",
           "jobs_xml", "parse_iso", "resolve"]
