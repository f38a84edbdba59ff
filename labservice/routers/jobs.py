"""Batch jobs: submit, list, inspect, cancel, and download results (with HTTP Range).

Every route is scoped to the caller's user (all their tokens): another user's job answers 404, exactly
like an unknown id, so ids cannot be probed, unless it is shared with a group of the caller's; then it can be
read and downloaded but not changed (403). Public callers cannot run jobs (403). Shares and links:
``PUT/DELETE /jobs/{id}/shares/{group}``, ``POST /jobs/{id}/links`` (rules in :mod:`labservice.sharing`). The engine is ``app.state.jobs``
(:func:`labservice.jobs.start_jobs` puts it there in the lifespan); the request bodies are the job kinds'
models (:data:`labservice.jobs.KINDS`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from labservice.encoding import decode_body, read_body
from labservice.http_ranges import parse_byte_range
from labservice.interpolation.engine import as_points
from labservice.jobs import KINDS, JobRecord, request_schema
from labservice.requests import POINTS_SCHEMA
from labservice.routers.deps import CallerDep, EngineDep, SettingsDep, UserDep, api_root, body_of
from labservice.sharing import Access, owned_job, readable_job

router = APIRouter(tags=["jobs"])
PREFIX = "/api/v1/jobs"


def _view(
    rec: JobRecord, root: str, shared: list[str] | None = None, owner: str | None = None
) -> dict[str, Any]:
    """The job as the API shows it; its links start with ``root``, the path the service is mounted under."""
    body = rec.public()
    if shared:  # someone else's job, shared with the caller read-only through these groups
        body["shared"], body["shared_through"], body["owner"] = True, shared, owner
    body["links"] = {
        "self": f"{root}{PREFIX}/{rec.id}",
        "files": {f["name"]: f"{root}{PREFIX}/{rec.id}/files/{f['name']}" for f in body["files"]},
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
            if "points_table" not in defs[name]["properties"]:  # a points job may read them from MyDB instead
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
    location = f"{api_root(request)}{PREFIX}/{rec.id}"
    content = {"id": rec.id, "status": rec.status, "links": {"self": location, "files": f"{location}/files"}}
    return JSONResponse(content, status_code=202, headers={"Location": location})


def _access(request: Request) -> Access | None:
    return getattr(request.state, "access", None)


def _list(access: Access | None, engine: Any, caller: Any, shared: bool, root: str) -> list[dict[str, Any]]:
    if access is None or caller.user_id is None:
        return [_view(r, root) for r in engine.list(caller.token_id)]
    own = [r for t in sorted(access.token_ids(caller.user_id)) for r in engine.list(t)]
    views = [_view(r, root) for r in own]
    if shared:
        mine = {r.id for r in own}
        others = {j: g for j, g in access.shared_jobs(caller.user_id).items() if j not in mine}
        recs = [r for r in (engine.registry.get(j) for j in others) if r is not None]
        names = access.owner_names({r.owner for r in recs})
        views += [_view(r, root, sorted(others[r.id]), names.get(r.owner)) for r in recs]
    views.sort(key=lambda v: v["created"] or "", reverse=True)
    return views


@router.get("/jobs", operation_id="list_jobs")
async def list_jobs(
    request: Request,
    engine: Engine,
    caller: Who,
    shared: Annotated[bool, Query(description="Also list jobs shared with your groups (marked shared).")] = False,
) -> dict[str, Any]:
    """The caller's jobs, newest first; with ``shared=true`` also those shared with them."""
    return {"jobs": await run_in_threadpool(_list, _access(request), engine, caller, shared, api_root(request))}


@router.get("/jobs/{job_id}", operation_id="get_job")
async def get_job(request: Request, job_id: str, engine: Engine, caller: Who) -> dict[str, Any]:
    """Status, progress, timestamps, error, result files with sizes and checksums, and expiry."""
    access = _access(request)

    def read() -> dict[str, Any]:
        rec, groups = readable_job(access, engine.registry, caller, job_id)
        owner = access.owner_names({rec.owner}).get(rec.owner) if groups and access else None
        body = _view(rec, api_root(request), groups, owner)
        if not groups and access is not None:
            body["shared_with"] = access.job_groups(job_id)
        return body

    return await run_in_threadpool(read)


@router.delete("/jobs/{job_id}", operation_id="cancel_job")
async def cancel_job(request: Request, job_id: str, engine: Engine, caller: Who) -> dict[str, Any]:
    """Cancel a job and free its workers (or delete a finished job's files)."""

    def cancel() -> JobRecord:
        rec = owned_job(_access(request), engine.registry, caller, job_id)
        return engine.cancel(rec.owner, job_id)

    return _view(await run_in_threadpool(cancel), api_root(request))


@router.put("/jobs/{job_id}/shares/{group}", operation_id="share_job")
async def share_job(request: Request, job_id: str, group: str, engine: Engine, caller: UserDep) -> dict[str, Any]:
    """Share your job read-only with a group you are in."""
    access = _access(request)

    def share() -> list[str]:
        owned_job(access, engine.registry, caller, job_id)
        return access.share_job(caller.user_id, job_id, group)  # type: ignore[union-attr]

    return {"id": job_id, "shared_with": await run_in_threadpool(share)}


@router.delete("/jobs/{job_id}/shares/{group}", operation_id="unshare_job")
async def unshare_job(request: Request, job_id: str, group: str, engine: Engine, caller: UserDep) -> dict[str, Any]:
    """Stop sharing your job with a group (at once, on every worker)."""
    access = _access(request)

    def unshare() -> list[str]:
        owned_job(access, engine.registry, caller, job_id)
        return access.unshare_job(job_id, group)  # type: ignore[union-attr]

    return {"id": job_id, "shared_with": await run_in_threadpool(unshare)}


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_in_hours: float = Field(default=24.0, description="How long the link works (at most a year).")


@router.post(
    "/jobs/{job_id}/links",
    status_code=201,
    operation_id="link_job",
    responses={409: {"description": "Your links quota is full; revoke one."}},
)
async def link_job(
    request: Request, job_id: str, engine: Engine, caller: UserDep, body: Annotated[LinkRequest, body_of(LinkRequest)]
) -> dict[str, Any]:
    """An unguessable URL that downloads the job's files without a token until it expires or is revoked."""
    access = _access(request)

    def make() -> dict[str, Any]:
        from labservice.users import UserStore

        owned_job(access, engine.registry, caller, job_id)
        limits = UserStore(access.db.url).by_id(caller.user_id).limits  # type: ignore[union-attr,arg-type]
        link, secret = access.create_link(caller.user_id, job_id, body.expires_in_hours, limits.max_links)  # type: ignore[union-attr]
        tail = f"/api/v1/links/{link['id']}/{secret}"  # base_url already ends with the root path
        return {**link, "url": str(request.base_url).rstrip("/") + tail, "path": api_root(request) + tail}

    return await run_in_threadpool(make)


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
    request: Request,
    job_id: str,
    name: str,
    engine: Engine,
    caller: Who,
    range: Annotated[str | None, Header()] = None,
) -> Response:
    """Download a result file (or one object of a zarr result); supports a single HTTP Range."""

    def entry() -> dict[str, Any]:
        rec, _ = readable_job(_access(request), engine.registry, caller, job_id)
        return engine.file_entry(rec.owner, job_id, name)

    return stream_file(engine, job_id, await run_in_threadpool(entry), range)


def stream_file(engine: Any, job_id: str, entry: dict[str, Any], range: str | None) -> Response:
    """A job's file as a (ranged) streaming response."""
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
    chunks = engine.scratch.iter_range(job_id, entry["name"], start, end)  # a sync iterator: run in a thread pool
    return StreamingResponse(
        chunks, status_code=status, headers=headers, media_type="application/octet-stream"
    )
