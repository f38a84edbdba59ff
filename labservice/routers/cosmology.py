"""Cosmology routes under /datasets/{sim}: snapshots, halo search, one halo, trees, mergers, particle and branch
cutouts, SQL.

Each route gets its simulation from :data:`~labservice.routers.deps.SimulationDep`, calls it in a worker
thread and encodes the answer. Tables (halos, tree rows, mergers, SQL results) come as JSON, CSV, Parquet or
msgpack, chosen by ``format=`` or else by ``Accept``. Library errors (unknown column, halo, snapshot) map to
HTTP statuses in the app's one error map.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from labservice.datasets import export
from labservice.datasets.branch import branch_nodes, branch_upper_bytes, node_cutout
from labservice.datasets.simulation import MAX_LIMIT
from labservice.encoding import JSON, MSGPACK, encode, openapi_body, pack
from labservice.errors import InvalidInput, LimitExceeded, unknown
from labservice.routers.deps import CallerDep, LimitsDep, SimulationDep, body_of, table_saved
from labservice.routers.params import BranchCutoutQuery, HaloCutoutQuery

router = APIRouter(tags=["cosmology"])
# Routes take the ``sim`` path parameter before SimulationDep (which resolves it) only so that OpenAPI keeps
# listing it first: FastAPI lists a route's own parameters before those of its dependencies.

CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
HDF5 = "application/x-hdf5"
NPZ = "application/x-npz"
TABLE_FORMATS = {"json": JSON, "csv": CSV, "parquet": PARQUET, "msgpack": MSGPACK}
CUTOUT_FORMATS = {"hdf5": HDF5, "msgpack": MSGPACK, "npz": NPZ}
BRANCH_FORMATS = {"hdf5": HDF5, "msgpack": MSGPACK}
MIB = 1 << 20
# Query parameters of the halo search that are not column filters.
SEARCH_PARAMS = ("near", "box", "order_by", "limit", "offset", "fields", "format")
SQL_CHARS = 100_000

TableFormat = Annotated[
    str | None,
    Query(description="json, csv, parquet or msgpack; default from Accept, else json.", examples=["csv"]),
]
FieldList = Annotated[
    str | None,
    Query(alias="fields", description="Comma-separated columns to return (id is always included).", examples=["mass,x"]),
]
_TABLE_OK = {
    200: {
        "description": "A table: JSON {columns, rows, ...}, CSV, Parquet, or msgpack {columns, data: {col: array}}.",
        "content": {CSV: {}, PARQUET: {}, MSGPACK: {}},
    },
    404: {"description": "Unknown simulation, snapshot or halo; the detail suggests close matches."},
    422: {"description": "Invalid parameter (unknown column, bad filter); the detail says what to change."},
}


# -- helpers ------------------------------------------------------------------------------------------
def _csv_list(value: str | None) -> list[str] | None:
    if value is None or not value.strip():
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _numbers(name: str, value: str | None, form: str) -> list[float] | None:
    if value is None:
        return None
    try:
        out = [float(v) for v in value.split(",")]
    except ValueError:
        out = []
    if len(out) != len(form.split(",")):
        raise InvalidInput(f"{name} must be {form} ({len(form.split(','))} comma-separated numbers); got {value!r}")
    return out


def choose_format(request: Request, fmt: str | None, formats: dict[str, str], default: str) -> str:
    """The format asked for by ``format=``, else by the Accept header, else ``default``."""
    if fmt is not None:
        if fmt not in formats:
            raise unknown("format", fmt, formats, error=InvalidInput)
        return fmt
    accept = request.headers.get("accept", "")
    for name, media in formats.items():
        if media in accept or (name == "parquet" and "parquet" in accept):
            return name
    return default


def table_response(frame: pd.DataFrame, fmt: str, info: dict[str, Any] | None = None) -> Response:
    """Encode a table; ``info`` (total, truncated, ...) goes in the body for JSON/msgpack, in headers otherwise."""
    info = dict(info or {})
    headers = {f"X-Lab-{k.replace('_', '-').title()}": str(v) for k, v in info.items() if isinstance(v, (int, bool))}
    if fmt == "csv":
        return Response(export.table_csv(frame), media_type=CSV, headers=headers)
    if fmt == "parquet":
        return Response(export.table_parquet(frame, info), media_type=PARQUET, headers=headers)
    columns = [str(c) for c in frame.columns]
    if fmt == "msgpack":
        return encode({**info, "columns": columns, "data": export.table_columns(frame)}, msgpack_wanted=True)
    rows = frame.to_dict(orient="records")
    return encode({**info, "columns": columns, "rows": rows}, msgpack_wanted=False)


async def _table(request: Request, fmt: str | None, frame: pd.DataFrame, info: dict[str, Any]) -> Response:
    chosen = choose_format(request, fmt, TABLE_FORMATS, "json")
    request.state.cost = len(frame)
    return await run_in_threadpool(table_response, frame, chosen, info)


def _links(request: Request, sim_id: str, halo: dict[str, Any]) -> dict[str, str]:
    base = f"{str(request.base_url).rstrip('/')}/api/v1/datasets/{sim_id}"
    hid, snap = int(halo["id"]), int(halo["snap"])
    links = {
        "self": f"{base}/snapshots/{snap}/halos/{hid}",
        "main_branch": f"{base}/halos/{hid}/tree?kind=main-branch",
        "progenitors": f"{base}/halos/{hid}/tree?kind=progenitors",
        "descendants": f"{base}/halos/{hid}/tree?kind=descendants",
        "full_tree": f"{base}/halos/{hid}/tree?kind=full",
        "mergers": f"{base}/halos/{hid}/mergers?min_ratio=0.2",
        "cutout": f"{base}/snapshots/{snap}/halos/{hid}/cutout?radius=2&units=r200&format=hdf5",
        "branch_cutout": f"{base}/halos/{hid}/branch-cutout?radius=2&units=r200&format=hdf5",
    }
    if int(halo["descendantId"]) >= 0:
        links["descendant"] = f"{base}/halos/{int(halo['descendantId'])}"
    if int(halo["firstProgenitorId"]) >= 0:
        links["main_progenitor"] = f"{base}/halos/{int(halo['firstProgenitorId'])}"
    return links


# -- routes ---------------------------------------------------------------------------------------------
@router.get("/datasets/{sim}/snapshots", operation_id="list_snapshots", responses=_TABLE_OK)
async def list_snapshots(sim: str, s: SimulationDep, request: Request, format: TableFormat = None) -> Response:
    """Every snapshot: snap, scale factor a, redshift, cosmic time (Gyr) and number of halos."""
    return await _table(request, format, s.snapshots(), {"simulation": s.id})


@router.get("/datasets/{sim}/snapshots/{snap}/halos", operation_id="search_halos", responses=_TABLE_OK)
async def search_halos(
    sim: str,
    s: SimulationDep,
    snap: int,
    request: Request,
    near: Annotated[str | None, Query(description="x,y,z,r: within r of a point (periodic).")] = None,
    box: Annotated[str | None, Query(description="x0,y0,z0,x1,y1,z1: inside a box (periodic).")] = None,
    order_by: Annotated[str | None, Query(description="Columns, '-' for descending: -mass,id.")] = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LIMIT, description="Rows per page.")] = 100,
    offset: Annotated[int, Query(ge=0, description="Rows to skip.")] = 0,
    columns: FieldList = None,
    format: TableFormat = None,
) -> Response:
    """Halos of a snapshot: filters column__gt/__lt/__ge/__le/__eq/__ne=value, near=, box=, order_by, paging."""
    filters = {}
    for key, value in request.query_params.multi_items():
        if key in SEARCH_PARAMS:
            continue
        if "__" not in key:
            s.check_columns([key], "parameter or halo column", SEARCH_PARAMS)
        filters[key] = value
    page = await run_in_threadpool(
        s.search_halos,
        snap,
        filters,
        near=_numbers("near", near, "x,y,z,r"),
        box=_numbers("box", box, "x0,y0,z0,x1,y1,z1"),
        order_by=_csv_list(order_by),
        limit=limit,
        offset=offset,
        fields=_csv_list(columns),
    )
    info = {"simulation": s.id, "snap": snap, "total": page.total, "offset": page.offset, "limit": page.limit}
    return await _table(request, format, page.frame, info)


_HALO_OK = {
    200: {"content": {JSON: {"example": {
        "halo": {"id": 0, "snap": 30, "mass": 1.8e14, "x": 21.4, "y": 12.0, "z": 21.9, "r200c": 0.57,
                 "descendantId": -1, "firstProgenitorId": 1, "lastProgenitorId": 40, "mainLeafId": 30},
        "links": {"main_branch": "/api/v1/datasets/cosmo64/halos/0/tree?kind=main-branch"},
    }}}},
    404: {"description": "Unknown simulation or halo, or the halo is at another snapshot."},
}


@router.get("/datasets/{sim}/snapshots/{snap}/halos/{halo_id}", operation_id="get_halo", responses=_HALO_OK)
def get_halo(sim: str, s: SimulationDep, snap: int, halo_id: int, request: Request) -> Response:
    """One halo: every catalog and tree column, with links to its tree, mergers and cutout."""
    halo = s.halo(halo_id, snap)
    return encode({"halo": halo, "links": _links(request, s.id, halo)}, False)  # NaN -> null


@router.get("/datasets/{sim}/halos/{halo_id}", operation_id="get_halo_by_id", responses=_HALO_OK)
def get_halo_by_id(sim: str, s: SimulationDep, halo_id: int, request: Request) -> Response:
    """One halo by its id alone (ids are unique across snapshots), with links."""
    halo = s.halo(halo_id)
    return encode({"halo": halo, "links": _links(request, s.id, halo)}, False)  # NaN -> null


@router.get("/datasets/{sim}/halos/{halo_id}/tree", operation_id="get_halo_tree", responses=_TABLE_OK)
async def get_halo_tree(
    sim: str,
    s: SimulationDep,
    halo_id: int,
    request: Request,
    kind: Annotated[str, Query(description="progenitors, main-branch, descendants or full.")] = "main-branch",
    snap: Annotated[int | None, Query(description="Only the rows at this snapshot.")] = None,
    columns: FieldList = None,
    format: TableFormat = None,
) -> Response:
    """The merger-tree rows of a halo, in one request (depth-first id ranges, no pointer walking)."""
    frame = await run_in_threadpool(s.tree, halo_id, kind, snap, _csv_list(columns))
    return await _table(request, format, frame, {"simulation": s.id, "halo_id": halo_id, "kind": kind})


@router.get("/datasets/{sim}/halos/{halo_id}/mergers", operation_id="get_halo_mergers", responses=_TABLE_OK)
async def get_halo_mergers(
    sim: str,
    s: SimulationDep,
    halo_id: int,
    request: Request,
    min_ratio: Annotated[float, Query(gt=0, le=1, description="Smallest progenitor/descendant mass ratio.")] = 0.2,
    format: TableFormat = None,
) -> Response:
    """Merger events along the halo's main branch: progenitor pairs each at least min_ratio of the descendant."""
    frame = await run_in_threadpool(s.mergers, halo_id, min_ratio)
    return await _table(request, format, frame, {"simulation": s.id, "halo_id": halo_id})


def _cutout_bytes(data: dict[str, Any], fmt: str, sim: Any) -> bytes:
    if fmt == "msgpack":
        return pack({**data, "count": int(data["Offsets"].shape[0])})
    return export.halo_cutout_npz(data) if fmt == "npz" else export.halo_cutout_hdf5(data, sim)


@router.get(
    "/datasets/{sim}/snapshots/{snap}/halos/{halo_id}/cutout",
    operation_id="get_halo_cutout",
    responses={
        200: {"description": "HDF5 (Gadget-style PartType1 group), msgpack or npz.",
              "content": {HDF5: {}, MSGPACK: {}, NPZ: {}}},
        413: {"description": "Over this caller's cutout size limit; ask for a smaller radius or fewer fields."},
    },
)
async def get_halo_cutout(
    sim: str,
    s: SimulationDep,
    snap: int,
    halo_id: int,
    request: Request,
    limits: LimitsDep,
    q: Annotated[HaloCutoutQuery, Depends()],
) -> Response:
    """Every particle within a radius of the halo's centre (periodic), not only its FOF members."""
    chosen = choose_format(request, q.format, CUTOUT_FORMATS, "hdf5")
    radius, units, names = q.radius, q.units, q.names
    upper = await run_in_threadpool(s.cutout_upper_bytes, halo_id, snap, radius, units, names)
    hint = "ask for a smaller radius or fewer fields"
    # The touched index cells bound the size; refuse absurd reads before touching the particles.
    limits.cutout(upper // 4, hint)
    data = await run_in_threadpool(s.cutout, halo_id, snap, radius, units, names)
    nbytes = sum(v.nbytes for v in data.values() if isinstance(v, np.ndarray))
    limits.cutout(nbytes, hint)
    body = await run_in_threadpool(_cutout_bytes, data, chosen, s)
    filename = f"{s.id}_snap{int(data['snap']):03d}_halo{halo_id}.{chosen}"
    return Response(body, media_type=CUTOUT_FORMATS[chosen],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "X-Lab-Count": str(int(data["Offsets"].shape[0]))})


def _branch_job_hint(sim: str, halo_id: int, radius: float, units: str, names: list[str] | None,
                     missing: str) -> str:
    job = {"kind": "branch-cutout", "dataset": sim, "halo_id": halo_id, "radius": radius, "units": units}
    if names is not None:
        job["fields"] = names
    if missing != "error":
        job["missing"] = missing
    return (f"POST /api/v1/jobs with {json.dumps(job)} (labclient: sim.halo({halo_id}).branch_cutout("
            f"radius={radius:g}, units={units!r}, job=True)), or ask for a smaller radius or fewer fields")


def _check_branch_bytes(nbytes: int, n_nodes: int, cap: int, hint: str) -> None:
    if nbytes > cap:
        raise LimitExceeded(
            f"this branch cutout is {nbytes / MIB:.1f} MiB over {n_nodes} nodes, over your synchronous cutout "
            f"limit of {cap / MIB:.1f} MiB; submit it as a batch job: {hint}"
        )


def _branch_bytes(info: dict[str, Any], nodes: list[dict[str, Any]], fmt: str, sim: Any) -> bytes:
    if fmt == "msgpack":
        count = int(sum(n["Offsets"].shape[0] for n in nodes))
        return pack({**info, "count": count, "nodes": nodes})
    return export.branch_cutout_hdf5(info, nodes, sim)


@router.get(
    "/datasets/{sim}/halos/{halo_id}/branch-cutout",
    operation_id="get_branch_cutout",
    responses={
        200: {"description": "HDF5 with one group per snapshot (the node's row as attributes), or msgpack "
                             "{nodes: [...]}.", "content": {HDF5: {}, MSGPACK: {}}},
        413: {"description": "Over your synchronous cutout limit; the detail gives the job request to submit instead."},
        422: {"description": "Bad radius, unit or field, or nodes without R200c (use units=mpc or missing=skip)."},
    },
)
async def get_branch_cutout(
    sim: str,
    s: SimulationDep,
    halo_id: int,
    request: Request,
    limits: LimitsDep,
    q: Annotated[BranchCutoutQuery, Depends()],
) -> Response:
    """Particles within a radius of every main-branch node of a halo, one group per snapshot; big ones are jobs."""
    chosen = choose_format(request, q.format, BRANCH_FORMATS, "hdf5")
    radius, units, names, missing = q.radius, q.units, q.names, q.missing
    nodes = await run_in_threadpool(branch_nodes, s, halo_id, radius, units, missing)
    cap = limits.cutout_cap
    hint = _branch_job_hint(s.id, halo_id, radius, units, names, missing)
    # The touched index cells bound the size (a cube of cells around each sphere, so about 4x loose).
    upper = await run_in_threadpool(branch_upper_bytes, s, nodes, radius, units, names)
    _check_branch_bytes(upper // 4, len(nodes), cap, hint)
    cutouts = [await run_in_threadpool(node_cutout, s, n, radius, units, names) for n in nodes]
    nbytes = sum(v.nbytes for c in cutouts for v in c.values() if isinstance(v, np.ndarray))
    _check_branch_bytes(nbytes, len(nodes), cap, hint)
    limits.charge(nbytes)
    info = {"simulation": s.id, "halo_id": halo_id, "radius": radius, "units": units}
    body = await run_in_threadpool(_branch_bytes, info, cutouts, chosen, s)
    filename = f"{s.id}_halo{halo_id}_branch.{chosen}"
    return Response(body, media_type=BRANCH_FORMATS[chosen],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "X-Lab-Nodes": str(len(nodes)),
                             "X-Lab-Count": str(sum(int(c["Offsets"].shape[0]) for c in cutouts))})


class SqlRequest(BaseModel):
    """A read-only SQL query over the tables halos, trees and snapshots."""

    model_config = ConfigDict(extra="forbid")
    sql: str = Field(min_length=1, max_length=SQL_CHARS, description="One SELECT statement.")
    into: str | None = Field(
        default=None, description="Save the result as this table of your MyDB (needs a token with the mydb scope) "
        "instead of returning it; a table of that name is replaced.", examples=["massive_z0"],
    )


def quick_sql(run: Callable[[], Any], sim: str | None, body: SqlRequest) -> Any:
    """Run a synchronous query; its 413 (row cap, time, memory) also says how to submit it as a job."""
    try:
        return run()
    except LimitExceeded as exc:
        job: dict[str, Any] = {"kind": "sql", **({"sim": sim} if sim else {}), "format": "parquet"}
        job["sql"] = body.sql if len(body.sql) <= 400 else "<your query>"
        if body.into:
            job["into"] = body.into
        cli = f"labclient sql {sim} QUERY --submit -o result.parquet" if sim else "lab.mydb.sql(QUERY, job=True)"
        raise LimitExceeded(
            f"{exc.message}. To run it in full, submit it as a job: POST /api/v1/jobs with {json.dumps(job)} "
            f"(labclient: {cli})", **exc.extra
        ) from None


def mydb_caller(request: Request, caller: Any) -> tuple[Any, Any]:
    """(MyDB, user) for a save into MyDB; 401 for public callers, 403 for a token without the mydb scope."""
    from labservice.routers.mydb import get_mydb, mydb_user
    from labservice.users import require_scope

    user = mydb_user(caller)
    require_scope(user, "mydb")
    return get_mydb(request), user


_SQL_EXAMPLES = {
    "most massive at z=0": {"sql": "SELECT id, mass, x, y, z FROM halos WHERE snap = 30 ORDER BY mass DESC LIMIT 10"},
    "progenitors (Lemson & Springel)": {
        "sql": "SELECT p.* FROM halos d JOIN halos p ON p.id BETWEEN d.id AND d.lastProgenitorId WHERE d.id = 0"
    },
}


@router.post(
    "/datasets/{sim}/sql",
    operation_id="run_sql",
    openapi_extra=openapi_body(SqlRequest, _SQL_EXAMPLES),
    responses={**_TABLE_OK, 201: {"description": "With into: the table saved in your MyDB."},
               401: {"description": "into needs a token (with the mydb scope)."},
               413: {"description": "Over the row cap (without truncate=true), the time-out or the memory limit (the "
                                    "detail gives the sql job to submit instead), or over your MyDB quota with into."}},
)
async def run_sql(
    sim: str,
    s: SimulationDep,
    body: Annotated[SqlRequest, body_of(SqlRequest)],
    request: Request,
    caller: CallerDep,
    format: TableFormat = None,
    truncate: Annotated[
        bool, Query(description="Over the row cap, return the first max_rows rows instead of a 413.")
    ] = False,
) -> Response:
    """Read-only SQL (DuckDB, no file/network/extension access) over halos, trees and snapshots; rows capped.
    ``into`` saves the result in your MyDB (201 with the table) instead of returning it."""
    if body.into is not None:
        mydb, user = mydb_caller(request, caller)
        result = await run_in_threadpool(quick_sql, lambda: s.sql(body.sql, truncate), s.id, body)
        info = await run_in_threadpool(mydb.save, user.user_id, body.into, result.frame)
        return table_saved(request, info)
    result = await run_in_threadpool(quick_sql, lambda: s.sql(body.sql, truncate), s.id, body)
    info = {"simulation": s.id, "truncated": result.truncated, "max_rows": s.sql_max_rows}
    return await _table(request, format, result.frame, info)
