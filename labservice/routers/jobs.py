"""Batch jobs: submit, list, inspect, cancel, and download results (with HTTP Range).

Every route is scoped to the caller's token: another token's job answers 404, exactly like an unknown id,
so ids cannot be probed. Public callers cannot run jobs (403). The engine is ``app.state.jobs``
(:func:`labservice.jobs.start_jobs` puts it there in the lifespan).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from labservice.encoding import as_points, decode_body, read_body
from labservice.errors import InvalidInput, LabError, StorageUnavailable
from labservice.http_errors import lab_error_response
from labservice.job_registry import JobRecord
from labservice.jobs import JobEngine, request_schema
from labservice.limits import Caller
from labservice.routers.deps import get_caller, get_settings
from labservice.routers.models import POINTS_SCHEMA
from labservice.settings import Settings

router = APIRouter(tags=["jobs"])
PREFIX = "/api/v1/jobs"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(LabError):
    status = 416
    code = "range_not_satisfiable"


def get_engine(request: Request) -> JobEngine:
    """The job engine of this app; 503 when the server runs without jobs."""
    engine = getattr(request.app.state, "jobs", None)
    if engine is None:
        raise StorageUnavailable("batch jobs are not enabled on this server (no job engine is running)")
    return engine


def _view(rec: JobRecord) -> dict[str, Any]:
    body = rec.public()
    body["links"] = {
        "self": f"{PREFIX}/{rec.id}",
        "files": {f["name"]: f"{PREFIX}/{rec.id}/files/{f['name']}" for f in body["files"]},
    }
    return body


_JOB_EXAMPLES: dict[str, Any] = {
    "cutout": {
        "kind": "cutout",
        "dataset": "isotropic64",
        "variables": ["velocity"],
        "times": [6.0],
        "x": "0:64:2",
        "formats": ["zarr"],
    },
    "points": {
        "kind": "points",
        "dataset": "isotropic64",
        "variable": "velocity",
        "time": 6.0,
        "points": [[0.1, 0.2, 0.3]],
    },
}


def _job_body() -> dict[str, Any]:
    """The documented job request: one of the engine's request models, plus ``points`` where needed."""
    schema = request_schema(ref_template="#/components/schemas/Job{model}")
    defs = {f"Job{name}": d for name, d in schema.pop("$defs", {}).items()}
    for name in ("JobPointsRequest", "JobParticlesRequest"):
        defs[name]["properties"]["points"] = POINTS_SCHEMA
        defs[name]["required"] = [*defs[name].get("required", []), "points"]
    examples = {k: {"summary": k, "value": v} for k, v in _JOB_EXAMPLES.items()}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema, "examples": examples},
                "application/msgpack": {"schema": schema},
            },
        },
        "x-schema-defs": defs,
    }


Engine = Annotated[JobEngine, Depends(get_engine)]
Who = Annotated[Caller, Depends(get_caller)]


@router.post(
    "/jobs",
    status_code=202,
    operation_id="submit_job",
    responses={
        202: {"description": "Accepted: the job is queued. Poll the Location."},
        403: {"description": "Public callers and tokens without jobs cannot submit."},
        413: {"description": "The job's output is over the token's job size cap."},
        429: {"description": "A quota is used up: running jobs or scratch bytes."},
    },
    openapi_extra=_job_body(),
)
async def submit_job(
    request: Request, engine: Engine, caller: Who, settings: Annotated[Settings, Depends(get_settings)]
) -> JSONResponse:
    """Submit a batch job (cutout, points or particles); answers 202 with its id and links."""
    raw = await read_body(request, settings.max_body_bytes)
    body = decode_body(raw, request.headers.get("content-type"))
    points = body.pop("points", None)
    if points is not None:
        try:
            points = as_points(points)
        except ValueError as exc:
            raise InvalidInput(f"points {exc}") from None
    rec = await run_in_threadpool(engine.submit, caller.token_id, body, points, caller.limits)
    location = f"{PREFIX}/{rec.id}"
    content = {"id": rec.id, "status": rec.status, "links": {"self": location, "files": f"{location}/files"}}
    return JSONResponse(content, status_code=202, headers={"Location": location})


@router.get("/jobs", operation_id="list_jobs")
async def list_jobs(engine: Engine, caller: Who) -> dict[str, Any]:
    """The caller's jobs, newest first."""
    recs = await run_in_threadpool(engine.list, caller.token_id)
    return {"jobs": [_view(r) for r in recs]}


@router.get("/jobs/{job_id}", operation_id="get_job")
async def get_job(job_id: str, engine: Engine, caller: Who) -> dict[str, Any]:
    """Status, progress, timestamps, error, result files with sizes and checksums, and expiry."""
    return _view(await run_in_threadpool(engine.get, caller.token_id, job_id))


@router.delete("/jobs/{job_id}", operation_id="cancel_job")
async def cancel_job(job_id: str, engine: Engine, caller: Who) -> dict[str, Any]:
    """Cancel a job and free its workers (or delete a finished job's files)."""
    return _view(await run_in_threadpool(engine.cancel, caller.token_id, job_id))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single ``bytes=`` range, None for no header; 416 when unsatisfiable."""
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if m is None or m.group(1) == m.group(2) == "":
        raise RangeNotSatisfiable(f"Range must be one 'bytes=start-end' range; got {header!r}", size=size)
    if m.group(1) == "":  # the last n bytes
        return max(0, size - int(m.group(2))), size
    start = int(m.group(1))
    end = size if m.group(2) == "" else min(size, int(m.group(2)) + 1)
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"Range {header!r} is outside the file of {size} bytes", size=size)
    return start, end


@router.get(
    "/jobs/{job_id}/files/{name:path}",
    operation_id="get_job_file",
    response_class=StreamingResponse,
    responses={
        206: {"description": "Partial content for a Range request."},
        416: {"description": "Bad range."},
    },
)
async def get_job_file(
    job_id: str, name: str, engine: Engine, caller: Who, range: Annotated[str | None, Header()] = None
) -> Response:
    """Download a result file (or one object of a zarr result); supports a single HTTP Range."""
    entry = await run_in_threadpool(engine.file_entry, caller.token_id, job_id, name)
    size = int(entry["size"])
    headers = {"Accept-Ranges": "bytes"}
    if "sha256" in entry:
        headers["ETag"] = f'"{entry["sha256"]}"'
    try:
        span = parse_range(range, size)
    except RangeNotSatisfiable as exc:
        response = lab_error_response(exc)
        response.headers.update(headers | {"Content-Range": f"bytes */{size}"})
        return response
    start, end = span if span is not None else (0, size)
    headers["Content-Length"] = str(end - start)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    chunks = engine.scratch.iter_range(job_id, name, start, end)  # a sync iterator: run in a thread pool
    return StreamingResponse(
        chunks, status_code=status, headers=headers, media_type="application/octet-stream"
    )
