"""Cosmology routes under /datasets/{sim}: snapshots, halo search, one halo, trees, mergers, particle and branch
cutouts, SQL.

Each route resolves the simulation, calls :class:`~labservice.datasets.simulation.Simulation` in a worker
thread and encodes the answer. Tables (halos, tree rows, mergers, SQL results) come as JSON, CSV, Parquet or
msgpack, chosen by ``format=`` or else by ``Accept``. Library errors (unknown column, halo, snapshot) map to
HTTP statuses in the app's one error map.
"""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from labservice.datasets.branch import branch_nodes, branch_upper_bytes, node_cutout, write_branch_hdf5
from labservice.datasets.simulation import MAX_LIMIT, Simulation, SimulationRegistry
from labservice.encoding import JSON, MSGPACK, encode, openapi_body, pack, parse_request
from labservice.errors import InvalidInput, LimitExceeded, NotFound, unknown
from labservice.limits import Caller, check_cutout_bytes
from labservice.routers.deps import DatasetRegistry, get_caller, get_datasets, get_settings, get_simulations
from labservice.settings import Settings

router = APIRouter(tags=["cosmology"])

Sims = Annotated[SimulationRegistry, Depends(get_simulations)]
Fields = Annotated[DatasetRegistry, Depends(get_datasets)]  # field datasets, for a clearer 404
CallerDep = Annotated[Caller, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

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
def simulation(sims: SimulationRegistry, fields: DatasetRegistry, sim_id: str) -> Simulation:
    """The simulation ``sim_id``; a field dataset of that id gets a 404 that says what the routes need."""
    if sim_id not in sims and sim_id in fields.ids():
        raise NotFound(
            f"dataset {sim_id!r} is a field dataset, not a cosmology simulation; these routes need one of: "
            + (", ".join(sims.ids()) or "(none served)")
        )
    return sims.get(sim_id)


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


def _column_values(series: pd.Series) -> Any:
    values = series.to_numpy()
    return values if values.dtype.kind in "biuf" else [None if pd.isna(v) else v for v in values]


def table_response(frame: pd.DataFrame, fmt: str, info: dict[str, Any] | None = None) -> Response:
    """Encode a table; ``info`` (total, truncated, ...) goes in the body for JSON/msgpack, in headers otherwise."""
    info = dict(info or {})
    headers = {f"X-Lab-{k.replace('_', '-').title()}": str(v) for k, v in info.items() if isinstance(v, (int, bool))}
    columns = [str(c) for c in frame.columns]
    if fmt == "csv":
        return Response(frame.to_csv(index=False), media_type=CSV, headers=headers)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"labservice": json.dumps(info)})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return Response(sink.getvalue(), media_type=PARQUET, headers=headers)
    if fmt == "msgpack":
        data = {c: _column_values(frame[c]) for c in frame.columns}
        return encode({**info, "columns": columns, "data": data}, msgpack_wanted=True)
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
async def list_snapshots(
    sim: str, request: Request, sims: Sims, fields: Fields, format: TableFormat = None
) -> Response:
    """Every snapshot: snap, scale factor a, redshift, cosmic time (Gyr) and number of halos."""
    s = simulation(sims, fields, sim)
    return await _table(request, format, s.snapshots(), {"simulation": s.id})


@router.get("/datasets/{sim}/snapshots/{snap}/halos", operation_id="search_halos", responses=_TABLE_OK)
async def search_halos(
    sim: str,
    snap: int,
    request: Request,
    sims: Sims,
    fields: Fields,
    near: Annotated[str | None, Query(description="x,y,z,r: within r of a point (periodic).")] = None,
    box: Annotated[str | None, Query(description="x0,y0,z0,x1,y1,z1: inside a box (periodic).")] = None,
    order_by: Annotated[str | None, Query(description="Columns, '-' for descending: -mass,id.")] = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LIMIT, description="Rows per page.")] = 100,
    offset: Annotated[int, Query(ge=0, description="Rows to skip.")] = 0,
    columns: FieldList = None,
    format: TableFormat = None,
) -> Response:
    """Halos of a snapshot: filters column__gt/__lt/__ge/__le/__eq/__ne=value, near=, box=, order_by, paging."""
    s = simulation(sims, fields, sim)
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
def get_halo(sim: str, snap: int, halo_id: int, request: Request, sims: Sims, fields: Fields) -> Response:
    """One halo: every catalog and tree column, with links to its tree, mergers and cutout."""
    s = simulation(sims, fields, sim)
    halo = s.halo(halo_id, snap)
    return encode({"halo": halo, "links": _links(request, s.id, halo)}, False)  # NaN -> null


@router.get("/datasets/{sim}/halos/{halo_id}", operation_id="get_halo_by_id", responses=_HALO_OK)
def get_halo_by_id(sim: str, halo_id: int, request: Request, sims: Sims, fields: Fields) -> Response:
    """One halo by its id alone (ids are unique across snapshots), with links."""
    s = simulation(sims, fields, sim)
    halo = s.halo(halo_id)
    return encode({"halo": halo, "links": _links(request, s.id, halo)}, False)  # NaN -> null


@router.get("/datasets/{sim}/halos/{halo_id}/tree", operation_id="get_halo_tree", responses=_TABLE_OK)
async def get_halo_tree(
    sim: str,
    halo_id: int,
    request: Request,
    sims: Sims,
    fields: Fields,
    kind: Annotated[str, Query(description="progenitors, main-branch, descendants or full.")] = "main-branch",
    snap: Annotated[int | None, Query(description="Only the rows at this snapshot.")] = None,
    columns: FieldList = None,
    format: TableFormat = None,
) -> Response:
    """The merger-tree rows of a halo, in one request (depth-first id ranges, no pointer walking)."""
    s = simulation(sims, fields, sim)
    frame = await run_in_threadpool(s.tree, halo_id, kind, snap, _csv_list(columns))
    return await _table(request, format, frame, {"simulation": s.id, "halo_id": halo_id, "kind": kind})


@router.get("/datasets/{sim}/halos/{halo_id}/mergers", operation_id="get_halo_mergers", responses=_TABLE_OK)
async def get_halo_mergers(
    sim: str,
    halo_id: int,
    request: Request,
    sims: Sims,
    fields: Fields,
    min_ratio: Annotated[float, Query(gt=0, le=1, description="Smallest progenitor/descendant mass ratio.")] = 0.2,
    format: TableFormat = None,
) -> Response:
    """Merger events along the halo's main branch: progenitor pairs each at least min_ratio of the descendant."""
    s = simulation(sims, fields, sim)
    frame = await run_in_threadpool(s.mergers, halo_id, min_ratio)
    return await _table(request, format, frame, {"simulation": s.id, "halo_id": halo_id})


def _cutout_bytes(data: dict[str, Any], fmt: str, sim: Simulation) -> bytes:
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray) and k != "centre"}
    scalars = {k: v for k, v in data.items() if k not in arrays}
    if fmt == "msgpack":
        return pack({**data, "count": int(data["Offsets"].shape[0])})
    sink = io.BytesIO()
    if fmt == "npz":
        np.savez(sink, **arrays, centre=data["centre"])
        return sink.getvalue()
    import h5py

    with h5py.File(sink, "w") as f:
        header = f.create_group("Header")
        header.attrs["BoxSize"] = sim.box
        header.attrs["Redshift"] = float(sim.info["snapshots"][data["snap"]]["redshift"])
        header.attrs["Time"] = float(sim.info["snapshots"][data["snap"]]["a"])
        header.attrs["MassTable"] = np.array([0.0, sim.info["particle_mass"] / 1e10, 0, 0, 0, 0])
        header.attrs["NumPart_ThisFile"] = np.array([0, data["Offsets"].shape[0], 0, 0, 0, 0], dtype=np.int64)
        for k, v in scalars.items():
            header.attrs[k] = v
        part = f.create_group("PartType1")
        for k, v in arrays.items():
            part.create_dataset(k, data=v)
    return sink.getvalue()


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
    snap: int,
    halo_id: int,
    request: Request,
    sims: Sims,
    fields: Fields,
    caller: CallerDep,
    settings: SettingsDep,
    radius: Annotated[float, Query(gt=0, description="Sphere radius, in units of R200c or Mpc/h.")] = 2.0,
    units: Annotated[str, Query(description="r200 (times the halo's R200c) or mpc (Mpc/h).")] = "r200",
    particle_fields: Annotated[
        str | None, Query(alias="fields", description="Coordinates,Velocities,ParticleIDs (default all).")
    ] = None,
    format: Annotated[str | None, Query(description="hdf5, msgpack or npz; default from Accept, else hdf5.")] = None,
) -> Response:
    """Every particle within a radius of the halo's centre (periodic), not only its FOF members."""
    s = simulation(sims, fields, sim)
    chosen = choose_format(request, format, CUTOUT_FORMATS, "hdf5")
    names = _csv_list(particle_fields)
    upper = await run_in_threadpool(s.cutout_upper_bytes, halo_id, snap, radius, units, names)
    hint = "ask for a smaller radius or fewer fields"
    # The touched index cells bound the size; refuse absurd reads before touching the particles.
    check_cutout_bytes(caller.limits, upper // 4, settings.sync_cutout_bytes, hint)
    data = await run_in_threadpool(s.cutout, halo_id, snap, radius, units, names)
    nbytes = sum(v.nbytes for v in data.values() if isinstance(v, np.ndarray))
    check_cutout_bytes(caller.limits, nbytes, settings.sync_cutout_bytes, hint)
    request.state.cost = nbytes
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
            f"this branch cutout is {nbytes / MIB:.1f} MiB over {n_nodes} nodes, over the synchronous limit of "
            f"{cap / MIB:.1f} MiB for your token; submit it as a batch job: {hint}"
        )


def _branch_bytes(info: dict[str, Any], nodes: list[dict[str, Any]], fmt: str, sim: Simulation) -> bytes:
    if fmt == "msgpack":
        count = int(sum(n["Offsets"].shape[0] for n in nodes))
        return pack({**info, "count": count, "nodes": nodes})
    sink = io.BytesIO()
    write_branch_hdf5(sink, info, sim.info, nodes)
    return sink.getvalue()


@router.get(
    "/datasets/{sim}/halos/{halo_id}/branch-cutout",
    operation_id="get_branch_cutout",
    responses={
        200: {"description": "HDF5 with one group per snapshot (the node's row as attributes), or msgpack "
                             "{nodes: [...]}.", "content": {HDF5: {}, MSGPACK: {}}},
        413: {"description": "Over the synchronous limit; the detail gives the job request to submit instead."},
        422: {"description": "Bad radius, unit or field, or nodes without R200c (use units=mpc or missing=skip)."},
    },
)
async def get_branch_cutout(
    sim: str,
    halo_id: int,
    request: Request,
    sims: Sims,
    fields: Fields,
    caller: CallerDep,
    settings: SettingsDep,
    radius: Annotated[float, Query(gt=0, description="Sphere radius, in units of R200c or Mpc/h.")] = 2.0,
    units: Annotated[str, Query(description="r200 (times each node's R200c) or mpc (Mpc/h).")] = "r200",
    particle_fields: Annotated[
        str | None, Query(alias="fields", description="Coordinates,Velocities,ParticleIDs (default all).")
    ] = None,
    missing: Annotated[
        str, Query(description="With units=r200, nodes without R200c: error (422) or skip them.")
    ] = "error",
    format: Annotated[str | None, Query(description="hdf5 or msgpack; default from Accept, else hdf5.")] = None,
) -> Response:
    """Particles within a radius of every main-branch node of a halo, one group per snapshot; big ones are jobs."""
    s = simulation(sims, fields, sim)
    chosen = choose_format(request, format, BRANCH_FORMATS, "hdf5")
    names = _csv_list(particle_fields)
    nodes = await run_in_threadpool(branch_nodes, s, halo_id, radius, units, missing)
    cap = min(caller.limits.max_cutout_bytes, settings.sync_cutout_bytes)
    hint = _branch_job_hint(s.id, halo_id, radius, units, names, missing)
    # The touched index cells bound the size (a cube of cells around each sphere, so about 4x loose).
    upper = await run_in_threadpool(branch_upper_bytes, s, nodes, radius, units, names)
    _check_branch_bytes(upper // 4, len(nodes), cap, hint)
    cutouts = [await run_in_threadpool(node_cutout, s, n, radius, units, names) for n in nodes]
    nbytes = sum(v.nbytes for c in cutouts for v in c.values() if isinstance(v, np.ndarray))
    _check_branch_bytes(nbytes, len(nodes), cap, hint)
    request.state.cost = nbytes
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
    responses={**_TABLE_OK, 413: {"description": "Over the row cap (without truncate=true), the time-out or "
                                                  "the memory limit; the limits are in the dataset metadata."}},
)
async def run_sql(
    sim: str,
    request: Request,
    sims: Sims,
    fields: Fields,
    settings: SettingsDep,
    format: TableFormat = None,
    truncate: Annotated[
        bool, Query(description="Over the row cap, return the first max_rows rows instead of a 413.")
    ] = False,
) -> Response:
    """Read-only SQL (DuckDB, no file/network/extension access) over halos, trees and snapshots; rows capped."""
    s = simulation(sims, fields, sim)
    body = await parse_request(request, SqlRequest, settings.max_body_bytes)
    result = await run_in_threadpool(s.sql, body.sql, truncate)
    info = {"simulation": s.id, "truncated": result.truncated, "max_rows": s.sql_max_rows}
    return await _table(request, format, result.frame, info)
