"""A read-only, virtual Zarr v3 group per dataset, so stock xarray/zarr can open it over HTTP.

``xr.open_zarr("http://host/api/v1/datasets/<id>/zarr/")`` sees:

- ``zarr.json``: the group, with inline consolidated metadata (no listing needed) and dataset attributes;
- ``<variable>/zarr.json``: the stored array document with named dimensions; the component axis is
  called ``<variable>_component`` because variables differ in their number of components;
- ``<variable>/c/...``: shard objects served byte for byte (and by byte range) from the underlying store,
  so a slice costs only the shards' indexes and the inner chunks it touches;
- ``x``, ``y``, ``z``, ``time``: small generated float64 coordinate arrays (one raw chunk each).

HTTP semantics: single byte ranges (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) give 206, unsatisfiable ones
416; HEAD; ETag with If-None-Match -> 304; 404 for any key outside the layout. A token may come as the
usual ``Authorization: Bearer`` header or as ``?token=``. Each response's data bytes count against the
caller's ``max_cutout_bytes`` (per request) and ``bytes_per_minute`` (a running budget: 429 with
Retry-After when used up; ``X-Lab-Bytes-Limit``, ``X-Lab-Bytes-Remaining`` and ``X-Lab-Bytes-Served`` on
every response). Zarr reads have their own rate and in-flight bucket (``zarr_requests_per_minute``,
``zarr_max_concurrent``; see :func:`labservice.limits.request_slot`).

``GET /datasets/<id>/zarr-stats`` reports what the view served: request, data-read and byte counters for
the dataset, and the asking caller's own budget and most recent shard reads (key and byte range), so a
client can check that a slice fetched only the chunks it needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import deque
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from labservice.errors import InvalidInput, LimitExceeded, NotFound
from labservice.limits import ByteBudget, Caller, shared_byte_budget
from labservice.routers.deps import DatasetRegistry, get_caller, get_datasets

router = APIRouter(tags=["zarr"])

DIMS = ("time", "z", "y", "x")
COORDS = ("time", "z", "y", "x")
_CACHE_CONTROL_DOC = "public, max-age=60"
_CACHE_CONTROL_DATA = "public, max-age=3600"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_KEY_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")
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


def _raw_store(ds: Any) -> Any:
    """The dataset's own zarr store, for byte (range) reads; only zarr-backed datasets have one."""
    zs = getattr(ds.store, "zarr_store", None)
    if zs is None:
        raise NotFound(f"dataset {ds.meta.id!r} is not stored as zarr, so it has no zarr view; use /cutout")
    return zs


def _get(zs: Any, key: str, rng: tuple[int, int] | None = None) -> bytes | None:
    """Bytes of ``key`` (or of [start, stop)), None when absent; runs zarr's coroutine on its own loop."""
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    br = None if rng is None else RangeByteRequest(rng[0], rng[1])
    buf = sync(zs.get(key, prototype=default_buffer_prototype(), byte_range=br))
    return None if buf is None else buf.to_bytes()


def _size_and_stamp(zs: Any, ds: Any, key: str) -> tuple[int, str] | None:
    """(size, version stamp) of a stored object, None when absent."""
    from zarr.core.sync import sync

    root = getattr(zs, "root", None)
    if root is not None:  # local: stat gives size and mtime in one call
        try:
            st = os.stat(os.path.join(str(root), key))
        except FileNotFoundError:
            return None
        return st.st_size, f"{st.st_mtime_ns}"
    try:
        return int(sync(zs.getsize(key))), ""
    except FileNotFoundError:
        return None


# -- the virtual layout --------------------------------------------------------------------------------
def _coord_values(meta: Any, name: str) -> np.ndarray:
    if name == "time":
        return np.asarray(meta.times, dtype="<f8")
    return getattr(meta.grid, name).coords().astype("<f8")


def _coord_doc(meta: Any, name: str) -> dict[str, Any]:
    n = len(_coord_values(meta, name))
    attrs: dict[str, Any] = {"long_name": name}
    if name != "time":
        axis = getattr(meta.grid, name)
        attrs["periodic"] = bool(axis.periodic)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [n],
        "data_type": "float64",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [n]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": "NaN",
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": attrs,
        "dimension_names": [name],
    }


def _variable_doc(ds: Any, variable: str) -> dict[str, Any]:
    raw = _get(_raw_store(ds), f"{variable}/zarr.json")
    if raw is None:
        raise NotFound(f"variable {variable!r} of dataset {ds.meta.id!r} has no zarr metadata")
    doc = json.loads(raw)
    doc["dimension_names"] = [*DIMS, f"{variable}_component"]
    return doc


def _group_doc(ds: Any) -> dict[str, Any]:
    meta = ds.meta
    members: dict[str, Any] = {name: _coord_doc(meta, name) for name in COORDS}
    for variable in meta.variables:
        members[variable] = _variable_doc(ds, variable)
    attrs = {"id": meta.id, "title": meta.title, "description": meta.description, "kind": meta.kind,
             "labservice": meta.model_dump(mode="json")}
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": attrs,
        "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": members},
    }


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, allow_nan=False).encode()


def _check_key(key: str) -> list[str]:
    """Split a key into parts; reject traversal, absolute paths and odd characters."""
    if not key or key.startswith("/") or "\\" in key:
        raise NotFound(f"no such key {key!r}; start at zarr.json")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _KEY_PART.match(part):
            raise NotFound(f"no such key {key!r}; keys are zarr.json, <array>/zarr.json and <array>/c/...")
    return parts


def _shard_key_ok(ds: Any, variable: str, idx: list[str]) -> bool:
    meta = ds.meta
    if len(idx) != 5 or not all(p.isdigit() for p in idx):
        return False
    shape = meta.array_shape(variable)
    shards = meta.array_shards(variable)
    return all(int(i) < -(-n // s) for i, n, s in zip(idx, shape, shards, strict=True))


def _listing(names: list[str]) -> bytes:
    # fsspec's HTTP filesystem lists a "folder" by reading the hrefs of an HTML page; zarr lists the group
    # that way when asked not to use consolidated metadata.
    links = "".join(f'<li><a href="{n}">{n}</a></li>' for n in names)
    return f"<!DOCTYPE html><html><body><ul>{links}</ul></body></html>".encode()


def _resolve(ds: Any, key: str) -> tuple[str, Any]:
    """("doc", bytes), ("html", bytes) for folder listings or ("stored", key) for shard objects."""
    meta = ds.meta
    if key.strip("/") == "":
        return "html", _listing(["zarr.json", *COORDS, *meta.variables])
    if key.rstrip("/") in (*COORDS, *meta.variables) and "/" not in key.rstrip("/"):
        return "html", _listing(["zarr.json"])
    parts = _check_key(key)
    if parts == ["zarr.json"]:
        return "doc", _json_bytes(_group_doc(ds))
    name = parts[0]
    if name in COORDS:
        if parts[1:] == ["zarr.json"]:
            return "doc", _json_bytes(_coord_doc(meta, name))
        if parts[1:] == ["c", "0"]:
            return "doc", _coord_values(meta, name).tobytes()
    elif name in meta.variables:
        if parts[1:] == ["zarr.json"]:
            return "doc", _json_bytes(_variable_doc(ds, name))
        if len(parts) > 2 and parts[1] == "c" and _shard_key_ok(ds, name, parts[2:]):
            return "stored", key
    raise NotFound(f"no such key {key!r} in dataset {meta.id!r}; start at zarr.json")


# -- HTTP ----------------------------------------------------------------------------------------------
def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, stop) of a single byte range; None when unsatisfiable; InvalidInput when malformed."""
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise InvalidInput(f"Range must be one range like 'bytes=0-99', 'bytes=100-' or 'bytes=-4'; got {header!r}")
    a, b = m.group(1), m.group(2)
    if not a:  # suffix: the last n bytes
        n = int(b)
        return (max(size - n, 0), size) if n > 0 and size > 0 else None
    start = int(a)
    stop = min(int(b) + 1, size) if b else size
    if start >= size or stop <= start:
        return None
    return start, stop


def _caller_with_query_token(request: Request, caller: Caller) -> Caller:
    # The limits middleware reads only the Authorization header; honour ?token= here the same way.
    token = request.query_params.get("token")
    if not token or caller.token_id is not None:
        return caller
    tokens = getattr(request.state, "tokens", None)
    if tokens is None:
        raise InvalidInput("this server has no token database; call it without a token")
    return tokens.verify(token)


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
async def zarr_root(
    dataset_id: str,
    request: Request,
    registry: Annotated[DatasetRegistry, Depends(get_datasets)],
    caller: Annotated[Caller, Depends(get_caller)],
) -> Response:
    """The group folder without the trailing slash: the same listing as ``zarr/``."""
    return await zarr_key(dataset_id, "", request, registry, caller)


_KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The object (JSON document, folder listing or binary chunk)."},
    206: {"description": "The requested byte range."},
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
    404: {"description": "No such key in the virtual zarr layout."},
    413: {"description": "More bytes than the caller may read in one request."},
    416: {"description": "The byte range lies outside the object."},
}


@router.head("/datasets/{dataset_id}/zarr/{key:path}", operation_id="head_zarr_key",
             response_class=Response, responses=_KEY_RESPONSES)
@router.get("/datasets/{dataset_id}/zarr/{key:path}", operation_id="get_zarr_key",
            response_class=Response, responses=_KEY_RESPONSES)
async def zarr_key(
    dataset_id: str,
    key: str,
    request: Request,
    registry: Annotated[DatasetRegistry, Depends(get_datasets)],
    caller: Annotated[Caller, Depends(get_caller)],
) -> Response:
    """One object of the dataset's read-only Zarr v3 group (open the folder URL with ``xr.open_zarr``)."""
    caller = _caller_with_query_token(request, caller)
    ds = registry.get(dataset_id)
    kind, what = await run_in_threadpool(_resolve, ds, key)
    counters = _counters(request)
    budget = shared_byte_budget(request.app.state)
    counters.count_request(dataset_id)
    if kind in ("doc", "html"):
        body: bytes | None = what
        size = len(what)
        etag = hashlib.sha1(what).hexdigest()[:24]
        cache_control = _CACHE_CONTROL_DOC
        media = "application/json" if key.endswith("zarr.json") else "application/octet-stream"
        if kind == "html":
            media = "text/html"
    else:
        zs = _raw_store(ds)
        found = await run_in_threadpool(_size_and_stamp, zs, ds, what)
        if found is None:  # a shard never written: zarr reads the fill value
            raise NotFound(f"shard {key!r} of dataset {dataset_id!r} holds no data (never written)")
        size, stamp = found
        body = None
        etag = hashlib.sha1(f"{ds.url}|{key}|{size}|{stamp}".encode()).hexdigest()[:24]
        cache_control = _CACHE_CONTROL_DATA
        media = "application/octet-stream"
    headers = {"ETag": f'"{etag}"', "Cache-Control": cache_control, "Accept-Ranges": "bytes",
               **_budget_headers(budget, caller)}
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or f'"{etag}"' in [t.strip().removeprefix("W/") for t in inm.split(",")]):
        return Response(status_code=304, headers=headers)

    status, start, stop = 200, 0, size
    range_header = request.headers.get("range")
    if range_header:
        rng = _parse_range(range_header, size)
        if rng is None:
            return JSONResponse(
                {"detail": f"range {range_header!r} is outside the object of {size} bytes"},
                status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"},
            )
        start, stop = rng
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    if kind == "stored":
        _check_bytes(caller, stop - start, key)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media)
    if body is None:
        left = budget.charge(caller, stop - start)  # 429 with Retry-After when the budget is used up
        headers.update(_budget_headers(budget, caller, left))
        request.state.cost = stop - start
        body = await run_in_threadpool(_get, _raw_store(ds), what, (start, stop))
        if body is None:
            raise NotFound(f"shard {key!r} of dataset {dataset_id!r} disappeared while reading")
        counters.count_read(dataset_id, caller.key, key, start, stop)
    else:
        body = body[start:stop]
    return Response(content=body, status_code=status, headers=headers, media_type=media)


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
async def zarr_stats(
    dataset_id: str,
    request: Request,
    registry: Annotated[DatasetRegistry, Depends(get_datasets)],
    caller: Annotated[Caller, Depends(get_caller)],
) -> dict[str, Any]:
    """What the zarr view of a dataset served: counters, your byte budget and your latest shard reads."""
    caller = _caller_with_query_token(request, caller)
    registry.get(dataset_id)
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
