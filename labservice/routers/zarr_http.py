"""HTTP for the read-only, virtual Zarr v3 group of each dataset (:mod:`labservice.storage.zarr_view`), so
stock xarray/zarr can open it.

``xr.open_zarr("http://host/api/v1/datasets/<id>/zarr/")`` sees:

- ``zarr.json``: the group, with inline consolidated metadata (no listing needed) and dataset attributes;
- ``<variable>/zarr.json``: the stored array document with named dimensions; the component axis is
  called ``<variable>_component`` because variables differ in their number of components;
- ``<variable>/c/...``: shard objects served byte for byte (and by byte range) from the underlying store,
  so a slice costs only the shards' indexes and the inner chunks it touches. The server checks the crc32c
  of the shard index and of every inner chunk a range touches before sending it: a damaged one is a 500
  ``corrupt_data`` naming the chunk, and its bytes are never sent;
- ``x``, ``y``, ``z``, ``time``: small generated float64 coordinate arrays (one raw chunk each).

HTTP semantics: single byte ranges (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) give 206, malformed or unsatisfiable
ones 416; HEAD; ETag with If-None-Match -> 304; 404 for any key outside the layout. A token may come as the
usual ``Authorization: Bearer`` header or as ``?token=``. Each response's data bytes count against the
caller's ``max_cutout_bytes`` (per request) and ``bytes_per_minute`` (a running budget: 429 with
Retry-After when used up; ``X-Lab-Bytes-Limit``, ``X-Lab-Bytes-Remaining`` and ``X-Lab-Bytes-Served`` on
every response). Zarr reads have their own rate and in-flight bucket (``zarr_requests_per_minute``,
``zarr_max_concurrent``; see :func:`labservice.limits.request_slot`).

Per request the route stays on the event loop when it can: a local shard is found with one ``stat`` and
read straight from the page cache (:func:`labservice.storage.zarr_view.read_now`); a disk wait, a remote
store or a document takes one worker thread. Stock clients: ``xr.open_zarr(url)`` makes one dask task per
inner chunk (two requests each: the shard index, then the chunk); ``chunks="auto"`` or chunks of the shard
shape read each shard in one request.

``GET /datasets/<id>/zarr-stats`` reports what the view served: request, data-read and byte counters for
the dataset, and the asking caller's own budget and most recent shard reads (key and byte range), so a
client can check that a slice fetched only the chunks it needs.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from labservice.errors import InvalidInput, LimitExceeded
from labservice.http_ranges import parse_byte_range
from labservice.limits import ByteBudget, Caller, shared_byte_budget
from labservice.routers.deps import CallerDep, DatasetDep
from labservice.storage import zarr_view

router = APIRouter(tags=["zarr"])

_CACHE_CONTROL_DOC = "max-age=60"
_CACHE_CONTROL_DATA = "max-age=3600"

RECENT_READS = 1024  # shard reads remembered per dataset (all callers), for zarr-stats


class ZarrCounters:
    """What the zarr view served, per dataset: requests, shard reads, bytes and the latest reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, dict[str, int]] = {}
        self._recent: dict[str, deque[tuple[str, str, int, int]]] = {}

    def _of(self, dataset_id: str) -> dict[str, int]:
        return self._totals.setdefault(dataset_id, {"requests": 0, "data_requests": 0, "data_bytes": 0})

    def count_request(self, dataset_id: str) -> None:
        with self._lock:
            self._of(dataset_id)["requests"] += 1

    def count_read(self, dataset_id: str, caller_key: str, key: str, start: int, stop: int) -> None:
        with self._lock:
            totals = self._of(dataset_id)
            totals["data_requests"] += 1
            totals["data_bytes"] += stop - start
            recent = self._recent.setdefault(dataset_id, deque(maxlen=RECENT_READS))
            recent.append((caller_key, key, start, stop))

    def report(self, dataset_id: str, caller_key: str) -> dict[str, Any]:
        """The dataset's totals and this caller's recent reads, oldest first."""
        with self._lock:
            totals = dict(self._of(dataset_id))
            mine = [{"key": k, "start": a, "stop": b}
                    for who, k, a, b in self._recent.get(dataset_id, ()) if who == caller_key]
        return {**totals, "recent_reads": mine}


def _counters(request: Request) -> ZarrCounters:
    state = request.app.state
    counters = getattr(state, "zarr_counters", None)
    if counters is None:  # created on the event loop, so only once
        counters = state.zarr_counters = ZarrCounters()
    return counters


def _budget_headers(budget: ByteBudget, caller: Caller, left: int | None = None) -> dict[str, str]:
    return {
        "X-Lab-Bytes-Limit": str(caller.limits.bytes_per_minute),
        "X-Lab-Bytes-Remaining": str(budget.remaining(caller) if left is None else left),
        "X-Lab-Bytes-Served": str(budget.served(caller)),
    }


async def caller_with_query_token(request: Request, caller: CallerDep) -> Caller:
    """The caller, also from ``?token=``: the limits middleware resolves it already (so the read counts in
    the token's buckets); this covers an app mounted without that middleware. A coroutine, so FastAPI
    does not hop to a worker thread to call it on every zarr read."""
    token = request.query_params.get("token") if request.scope.get("query_string") else None
    if not token or caller.token_id is not None:
        return caller
    tokens = getattr(request.state, "tokens", None)
    if tokens is None:
        raise InvalidInput("this server has no token database; call it without a token")
    return await run_in_threadpool(tokens.verify, token)


ZarrCaller = Annotated[Caller, Depends(caller_with_query_token)]


def _check_bytes(caller: Caller, nbytes: int, key: str) -> None:
    cap = caller.limits.max_cutout_bytes
    if nbytes > cap:
        raise LimitExceeded(
            f"reading {key!r} would send {nbytes} bytes, over your per-request limit of {cap} bytes; ask for a "
            "byte range (zarr reads single inner chunks of a shard that way) or use a token with larger limits"
        )


@router.api_route(
    "/datasets/{dataset_id}/zarr",
    methods=["GET", "HEAD"],
    include_in_schema=False,
)
async def zarr_root(dataset_id: str, ds: DatasetDep, request: Request, caller: ZarrCaller) -> Response:
    """The group folder without the trailing slash: the same listing as ``zarr/``."""
    return await zarr_key(dataset_id, ds, "", request, caller)


_KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The object (JSON document, folder listing or binary chunk)."},
    206: {"description": "The requested byte range."},
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
    404: {"description": "No such key in the virtual zarr layout."},
    413: {"description": "More bytes than the caller may read in one request."},
    416: {"description": "The byte range is malformed or lies outside the object."},
}


@router.head("/datasets/{dataset_id}/zarr/{key:path}", operation_id="head_zarr_key",
             response_class=Response, responses=_KEY_RESPONSES)
@router.get("/datasets/{dataset_id}/zarr/{key:path}", operation_id="get_zarr_key",
            response_class=Response, responses=_KEY_RESPONSES)
async def zarr_key(dataset_id: str, ds: DatasetDep, key: str, request: Request, caller: ZarrCaller) -> Response:
    """One object of the dataset's read-only Zarr v3 group (open the folder URL with ``xr.open_zarr``)."""
    # A local shard is found with one stat on this thread; documents and remote stores take a thread.
    obj = zarr_view.lookup_now(ds, key) or await run_in_threadpool(zarr_view.lookup, ds, key)
    counters = _counters(request)
    budget = shared_byte_budget(request.app.state)
    counters.count_request(dataset_id)
    # A token's answers are private: a shared cache or CDN must not hand them to others (nor let the
    # same bytes be fetched again past the token's byte budget). Public answers may be shared.
    scope = "private" if caller.token_id is not None else "public"
    cache_control = f"{scope}, {_CACHE_CONTROL_DATA if obj.kind == 'stored' else _CACHE_CONTROL_DOC}"
    headers = {"ETag": f'"{obj.etag}"', "Cache-Control": cache_control, "Accept-Ranges": "bytes",
               **_budget_headers(budget, caller)}
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or f'"{obj.etag}"' in [t.strip().removeprefix("W/") for t in inm.split(",")]):
        return Response(status_code=304, headers=headers)

    status, start, stop = 200, 0, obj.size
    span = parse_byte_range(request.headers.get("range"), obj.size)  # 416 when malformed or outside
    if span is not None:
        status, start, stop = 206, span.start, span.stop
        headers["Content-Range"] = span.content_range
    headers["Content-Length"] = str(stop - start)
    if obj.kind == "stored":
        _check_bytes(caller, stop - start, key)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=obj.media_type)
    if obj.kind == "stored":
        left = budget.charge(caller, stop - start)  # 429 with Retry-After when the budget is used up
        headers.update(_budget_headers(budget, caller, left))
        request.state.cost = stop - start
    body = zarr_view.read_now(ds, obj, start, stop)  # page-cache hits: no thread hop
    if body is None:
        body = await run_in_threadpool(zarr_view.read, ds, obj, start, stop)
    if obj.kind == "stored":
        counters.count_read(dataset_id, caller.key, key, start, stop)
    return Response(content=body, status_code=status, headers=headers, media_type=obj.media_type)


_STATS_EXAMPLE = {
    "dataset": "isotropic64",
    "requests": 14,
    "data_requests": 9,
    "data_bytes": 3539040,
    "you": {
        "caller": "public",
        "bytes_per_minute": 1073741824,
        "bytes_remaining": 1070202784,
        "bytes_served": 3539040,
        "recent_reads": [{"key": "velocity/c/0/0/0/0/0", "start": 3145732, "stop": 3145892}],
    },
}


@router.get(
    "/datasets/{dataset_id}/zarr-stats",
    operation_id="zarr_stats",
    responses={200: {"content": {"application/json": {"example": _STATS_EXAMPLE}}}},
)
async def zarr_stats(dataset_id: str, ds: DatasetDep, request: Request, caller: ZarrCaller) -> dict[str, Any]:
    """What the zarr view of a dataset served: counters, your byte budget and your latest shard reads."""
    report = _counters(request).report(dataset_id, caller.key)
    budget = shared_byte_budget(request.app.state)
    recent = report.pop("recent_reads")
    return {
        "dataset": dataset_id,
        **report,
        "you": {
            "caller": caller.name if caller.token_id else "public",
            "bytes_per_minute": caller.limits.bytes_per_minute,
            "bytes_remaining": budget.remaining(caller),
            "bytes_served": budget.served(caller),
            "recent_reads": recent,
        },
    }
