"""Batch jobs: submit, list, inspect, cancel, and download results (with HTTP Range).

Every route is scoped to the caller's token: another token's job answers 404, exactly like an unknown id,
so ids cannot be probed. Public callers cannot run jobs (403). The engine is ``app.state.jobs``
(:func:`labservice.jobs.start_jobs` puts it there in the lifespan); the request bodies are the job kinds'
models (:data:`labservice.jobs.KINDS`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from labservice.encoding import decode_body, read_body
from labservice.http_ranges import parse_byte_range
from labservice.interpolation.engine import as_points
from labservice.jobs import KINDS, JobRecord, request_schema
from labservice.requests import POINTS_SCHEMA
from labservice.routers.deps import CallerDep, EngineDep, SettingsDep

router = APIRouter(tags=["jobs"])
PREFIX = "/api/v1/jobs"


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
        "time": 6.0,
        "x": "0:64:2",
        "format": "zarr",
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
    schema = request_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    for kind in KINDS.values():
        if kind.takes_points:  # sent in the body, taken out before the kind's model sees it
            name = kind.request.__name__
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


Engine = EngineDep
Who = CallerDep


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
    request: Request, engine: Engine, caller: Who, settings: SettingsDep
) -> JSONResponse:
    """Submit a batch job (cutout, points or particles); answers 202 with its id and links."""
    raw = await read_body(request, settings.max_body_bytes)
    body = decode_body(raw, request.headers.get("content-type"))
    points = body.pop("points", None)
    if points is not None:
        points = as_points(points, strict=True)
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
    span = parse_byte_range(range, size)  # 416 through the error map when malformed or outside the file
    start, end = (span.start, span.stop) if span is not None else (0, size)
    headers["Content-Length"] = str(end - start)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = span.content_range
    chunks = engine.scratch.iter_range(job_id, name, start, end)  # a sync iterator: run in a thread pool
    return StreamingResponse(
        chunks, status_code=status, headers=headers, media_type="application/octet-stream"
    )
