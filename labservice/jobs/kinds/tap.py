"""The ``tap`` job kind: one asynchronous ADQL query of the TAP service (``/tap/async``).

One part runs the query on a worker under the job's execution duration (DuckDB interrupts it past that)
and stores ``result.<xml|csv|parquet>``. A query that fails on its own terms (an ADQL error, the time
limit, the memory limit) is not retried: the part stores ``error.xml`` (a TAP error document) and the job
finishes, so UWS shows ERROR with the message; a lost worker or a store outage is retried like any job's.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from labservice.errors import LabError
from labservice.jobs import parts
from labservice.jobs.kinds.base import JobContext, JobKind, Plan

ROW_BYTES = 64  # per row: the quota reserves MAXREC (or the row cap) x this
_services: OrderedDict[str, Any] = OrderedDict()  # per process: TAP services opened once per (folders, limits)


class TapJobRequest(BaseModel):
    """An ADQL query run asynchronously (UWS clients create these through /tap/async)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["tap"] = "tap"
    dataset: Literal["tap"] = Field(default="tap", description="The TAP service (all simulations).")
    query: str = Field(min_length=1, max_length=20_000, description="One ADQL SELECT.")
    format: Literal["votable", "csv", "parquet"] = "votable"
    maxrec: int | None = Field(default=None, ge=0, description="Most rows (capped by the service's row cap).")
    simulations: list[str] = Field(description="The simulations the TAP service serves (schemas).")
    execution_duration: float = Field(default=60.0, gt=0, le=86400, description="Seconds before the query is aborted.")
    max_rows: int = Field(default=100_000, ge=1, description="The service's row cap.")
    memory_limit: str = "256MB"


def _service(paths: dict[str, str], req_or_spec: dict[str, Any]) -> Any:
    from labservice.datasets.tap.service import TapLimits, TapService

    limits = TapLimits(int(req_or_spec["max_rows"]), float(req_or_spec["execution_duration"]),
                       str(req_or_spec["memory_limit"]), 1)
    key = repr((sorted(paths.items()), limits))
    return parts.cached(_services, key, lambda: TapService.from_paths(paths, limits), keep=2)


def run_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the query and store its result (or its error document); idempotent like every part."""
    from labservice.datasets.tap import votable

    scratch, job = parts.scratch_of(spec), spec["job"]
    done = parts.committed(scratch, job, 0)
    if done is not None:
        return done
    try:
        result = _service(spec["paths"], spec).run(spec["query"], spec["maxrec"], spec["format"])
        name, data, extra = f"result.{votable.SUFFIXES[spec['format']]}", result.body, {"overflow": result.overflow}
    except LabError as exc:  # the query's own fault: an answer (ERROR), not a fault to retry
        name, data, extra = "error.xml", votable.error_document(exc.message), {"error": exc.message}
    entry = parts.put_object(scratch, job, name, data, f"writing {name}") | extra
    return parts.commit(scratch, job, 0, {"part": 0, "files": [entry]})


def finalize(spec: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return parts.write_manifest(parts.scratch_of(spec), spec["job"], [f for r in records for f in r["files"]])


class Tap(JobKind):
    name = "tap"
    request = TapJobRequest

    def _paths(self, ctx: JobContext, req: TapJobRequest) -> dict[str, str]:
        return {s: str(ctx.simulation_path(s)) for s in req.simulations}

    def check(self, ctx: JobContext, req: TapJobRequest, points: np.ndarray | None) -> int:
        """Translate the ADQL (a bad query is refused here); reserves maxrec rows of scratch."""
        service = _service(self._paths(ctx, req), req.model_dump())
        service.translate(req.query)
        rows = req.max_rows if req.maxrec is None else min(req.maxrec, req.max_rows)
        return max(rows, 1) * ROW_BYTES

    def plan(self, ctx: JobContext, job_id: str, req: TapJobRequest) -> Plan:
        spec = ctx.base_spec(job_id) | req.model_dump() | {"paths": self._paths(ctx, req), "part": 0}
        return Plan([spec], ctx.base_spec(job_id))

    run_part = staticmethod(run_part)
    finalize = staticmethod(finalize)


KIND = Tap()
