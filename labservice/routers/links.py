"""Links: a job's files without a token (SciServer's anonymous file sharing), until expiry or revocation.

``POST /api/v1/jobs/{id}/links`` (in the jobs router) makes one; here: list your links, revoke one, and the
link itself, ``/api/v1/links/{id}/{secret}`` (the job's files) and ``.../files/{name}`` (a download with
HTTP Range). A link is checked against the database on every request, so a revoked link stops at once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from labservice.errors import NotFound
from labservice.routers.deps import AccessDep, EngineDep, UserDep, api_root
from labservice.routers.jobs import stream_file

router = APIRouter(tags=["links"])


@router.get("/links", operation_id="list_links")
async def list_links(caller: UserDep, access: AccessDep) -> dict[str, Any]:
    """Your links (never their secrets): id, job, created, expires, revoked, active."""
    return {"links": await run_in_threadpool(access.list_links, caller.user_id)}


@router.delete("/links/{link_id}", operation_id="revoke_link")
async def revoke_link(link_id: str, caller: UserDep, access: AccessDep) -> dict[str, Any]:
    """Revoke one of your links: it stops working at once, on every worker."""
    await run_in_threadpool(access.revoke_link, caller.user_id, link_id)
    return {"id": link_id, "revoked": True}


def _job(access: Any, engine: Any, link_id: str, secret: str) -> Any:
    job_id = access.resolve_link(link_id, secret)
    rec = engine.registry.get(job_id)
    if rec is None:
        raise NotFound("the job behind this link is gone")
    return rec


@router.get("/links/{link_id}/{secret}", operation_id="open_link")
async def open_link(
    request: Request, link_id: str, secret: str, access: AccessDep, engine: EngineDep
) -> dict[str, Any]:
    """The linked job's status and files, with their download URLs (no token needed)."""
    rec = await run_in_threadpool(_job, access, engine, link_id, secret)
    base = f"{api_root(request)}/api/v1/links/{link_id}/{secret}/files"
    files = [f for f in rec.files if not f.get("hidden")] if rec.status == "done" else []
    return {
        "job": rec.id, "kind": rec.kind, "status": rec.status,
        "files": [{**f, "url": f"{base}/{f['name']}"} for f in files],
    }  # fmt: skip


@router.get(
    "/links/{link_id}/{secret}/files/{name:path}",
    operation_id="download_link_file",
    response_class=StreamingResponse,
)
async def download_link_file(
    link_id: str,
    secret: str,
    name: str,
    access: AccessDep,
    engine: EngineDep,
    range: Annotated[str | None, Header()] = None,
) -> Response:
    """Download one of the linked job's files (no token needed); supports a single HTTP Range."""

    def entry() -> tuple[str, dict[str, Any]]:
        rec = _job(access, engine, link_id, secret)
        return rec.id, engine.file_entry(rec.owner, rec.id, name)

    job_id, found = await run_in_threadpool(entry)
    return stream_file(engine, job_id, found, range)
