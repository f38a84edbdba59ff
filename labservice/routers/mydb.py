"""MyDB routes: a caller's tables (list, describe, download, upload, drop), sharing them with groups, and
read-only SQL over their tables, the tables shared with them and the catalogs.

Thin: each route resolves the caller (a token holder; public callers get a 401 that names the mydb scope),
calls :class:`labservice.datasets.mydb.MyDB` in a worker thread and encodes the answer. Tables travel as
the SQL endpoint's tables do (JSON, CSV, Parquet, msgpack).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from labservice.datasets.mydb import MyDB
from labservice.encoding import MSGPACK, openapi_body, read_body
from labservice.errors import InvalidInput, StorageUnavailable, Unauthorized
from labservice.limits import Caller
from labservice.routers.cosmology import (
    _TABLE_OK,
    PARQUET,
    TABLE_FORMATS,
    SqlRequest,
    TableFormat,
    _table,
    choose_format,
    quick_sql,
)
from labservice.routers.deps import CallerDep, SettingsDep, body_of, table_saved

router = APIRouter(tags=["mydb"])
NEEDS_TOKEN = (
    "MyDB needs a token with the mydb scope: send 'Authorization: Bearer lab_...' with a token from "
    "`labservice token create --user NAME --scopes read,jobs,mydb,share` (ask the operator for one)"
)


def get_mydb(request: Request) -> MyDB:
    mydb = getattr(request.app.state, "mydb", None)
    if mydb is None:
        raise StorageUnavailable("this server has no platform database, so no users and no MyDB")
    return mydb


def mydb_user(caller: CallerDep) -> Caller:
    """The caller as a MyDB user; 401 for public callers (the middleware checks the mydb scope)."""
    if caller.token_id is None or caller.user_id is None:
        raise Unauthorized(NEEDS_TOKEN)
    return caller


MyDBDep = Annotated[MyDB, Depends(get_mydb)]
MyUser = Annotated[Caller, Depends(mydb_user)]
Shared = Annotated[
    bool | None,
    Query(
        description="true: only tables shared with you; false: only yours; unset: both (shared ones marked)."
    ),
]


@router.get("/mydb/tables", operation_id="list_mydb_tables")
async def list_tables(mydb: MyDBDep, user: MyUser, shared: Shared = None) -> dict[str, Any]:
    """Your tables and those shared with you (``shared: true``, ``ref`` OWNER.NAME), with your usage and quota."""
    tables = await run_in_threadpool(mydb.tables, user.user_id, shared)
    return {"tables": tables, "usage": await run_in_threadpool(mydb.usage, user.user_id)}


@router.get(
    "/mydb/tables/{ref}",
    operation_id="get_mydb_table",
    responses={
        200: {
            "description": "The table's schema, rows and size; with format= its data.",
            "content": {"text/csv": {}, PARQUET: {}, MSGPACK: {}},
        }
    },
)
async def get_table(
    ref: str,
    mydb: MyDBDep,
    user: MyUser,
    request: Request,
    format: TableFormat = None,
    limit: Annotated[
        int | None, Query(ge=0, le=10_000_000, description="Only this many rows (a preview).")
    ] = None,
    offset: Annotated[int, Query(ge=0, description="Rows to skip.")] = 0,
) -> Any:
    """A table (NAME, mydb.NAME or OWNER.NAME): schema, rows and size; ``format=csv|parquet|json`` gives the data."""
    if format is None:
        return await run_in_threadpool(mydb.info, user.user_id, ref)
    chosen = choose_format(request, format, TABLE_FORMATS, "json")
    if chosen == "parquet" and limit is None and not offset:  # the stored file as it is
        row, data = await run_in_threadpool(mydb.parquet, user.user_id, ref)
        return Response(
            data,
            media_type=PARQUET,
            headers={
                "Content-Disposition": f'attachment; filename="{row["name"]}.parquet"',
                "X-Lab-Rows": str(row["rows"]),
            },
        )
    frame = await run_in_threadpool(mydb.read, user.user_id, ref, limit, offset)
    return await _table(request, chosen, frame, {"table": ref, "offset": offset})


@router.put(
    "/mydb/tables/{ref}",
    status_code=201,
    operation_id="put_mydb_table",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}, "example": "x,y,z\n0.1,0.2,0.3\n"},
                PARQUET: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    responses={
        201: {"description": "Saved (a table of that name is replaced)."},
        413: {"description": "Over your MyDB quota; the body has used_bytes, quota_bytes, table_bytes."},
    },
)
async def put_table(
    ref: Annotated[
        str, Path(description="The table's name (NAME or mydb.NAME): yours, to create or replace.")
    ],
    mydb: MyDBDep,
    user: MyUser,
    request: Request,
    settings: SettingsDep,
    format: Annotated[
        str | None, Query(description="csv or parquet; default from Content-Type, else sniffed.")
    ] = None,
) -> JSONResponse:
    """Upload a CSV (with a header row) or Parquet file as your table ``ref`` (replacing one of that name)."""
    if format is not None and format not in ("csv", "parquet"):
        raise InvalidInput(f"format must be csv or parquet, not {format!r}")
    ctype = request.headers.get("content-type", "")
    fmt = format or ("csv" if "csv" in ctype else "parquet" if "parquet" in ctype else None)
    data = bytes(await read_body(request, settings.max_body_bytes))
    return table_saved(request, await run_in_threadpool(mydb.upload, user.user_id, ref, data, fmt))


@router.delete("/mydb/tables/{ref}", operation_id="delete_mydb_table")
async def delete_table(ref: str, mydb: MyDBDep, user: MyUser) -> dict[str, Any]:
    """Drop one of your tables (and its shares). A table shared with you is read-only: 403."""
    return await run_in_threadpool(mydb.drop, user.user_id, ref)


@router.put("/mydb/tables/{ref}/shares/{group}", operation_id="share_mydb_table")
async def share_table(ref: str, group: str, mydb: MyDBDep, user: MyUser) -> dict[str, Any]:
    """Share your table read-only with a group you are in."""
    return await run_in_threadpool(mydb.share, user.user_id, ref, group)


@router.delete("/mydb/tables/{ref}/shares/{group}", operation_id="unshare_mydb_table")
async def unshare_table(ref: str, group: str, mydb: MyDBDep, user: MyUser) -> dict[str, Any]:
    """Stop sharing your table with a group; its members lose access at once, on every worker."""
    return await run_in_threadpool(mydb.unshare, user.user_id, ref, group)


_SQL_EXAMPLES = {
    "my table": {"sql": "SELECT * FROM mydb.sensors LIMIT 10"},
    "join a catalog": {"sql": "SELECT h.id, h.mass FROM cosmo64.halos h JOIN mydb.picked p ON p.id = h.id"},
    "save": {
        "sql": "SELECT id, mass, x, y, z FROM cosmo64.halos WHERE snap = 30 AND mass > 1e13",
        "into": "massive_z0",
    },
}


@router.post(
    "/mydb/sql",
    operation_id="run_mydb_sql",
    openapi_extra=openapi_body(SqlRequest, _SQL_EXAMPLES),
    responses={
        **_TABLE_OK,
        201: {"description": "With into: the saved table."},
        413: {
            "description": "Over the row cap, the time-out or the memory limit (submit a job of kind "
            "sql instead), or over your MyDB quota with into."
        },
    },
)
async def run_mydb_sql(
    mydb: MyDBDep,
    user: MyUser,
    body: Annotated[SqlRequest, body_of(SqlRequest)],
    request: Request,
    format: TableFormat = None,
    truncate: Annotated[
        bool, Query(description="Over the row cap, the first max_rows rows instead of a 413.")
    ] = False,
) -> Response:
    """Read-only SQL over mydb.NAME (yours), OWNER.NAME (shared with you) and SIM.halos/trees/snapshots;
    ``into`` saves the result as your table."""
    result = await run_in_threadpool(
        quick_sql, lambda: mydb.sql(user.user_id, body.sql, truncate), None, body
    )
    if body.into is not None:
        return table_saved(request, await run_in_threadpool(mydb.save, user.user_id, body.into, result.frame))
    info = {"truncated": result.truncated, "max_rows": mydb.max_rows}
    return await _table(request, format, result.frame, info)
