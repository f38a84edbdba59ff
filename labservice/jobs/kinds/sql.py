"""The ``sql`` job kind: a submitted query, without the synchronous endpoint's row cap, written to a file and
optionally saved in the owner's MyDB.

``{"kind": "sql", "sim": "cosmo64", "sql": "SELECT ...", "format": "parquet"|"csv"|"hdf5", "into": "name"}``.
With ``sim`` the query sees that simulation's ``halos``, ``trees`` and ``snapshots`` exactly as
``POST /datasets/{sim}/sql`` does (the same locked DuckDB, so the same answer); without it, it is MyDB SQL
(``mydb.NAME``, ``OWNER.NAME``, ``SIM.halos``) run with the owner's access as it is when the job runs.
The time limit is ``LABSERVICE_SQL_JOB_TIMEOUT_SECONDS``; DuckDB's memory limit still holds.

One part runs the query and commits the rows as Parquet (a retried part finds its record); the finalizer
writes ``result.<format>`` and, with ``into``, saves the table in MyDB (a retry replaces it, the same rows).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from labservice.errors import InvalidInput, StorageUnavailable
from labservice.jobs import parts
from labservice.jobs.kinds.base import JobContext, JobKind, Plan
from labservice.jobs.parts import with_retries

SQL_CHARS = 100_000
JOB_TIMEOUT = 3600.0  # seconds, when the engine has no MyDB built from the settings
NO_CAP = 10**12  # rows: a job has no row cap (DuckDB's memory limit bounds it)
_engines: OrderedDict[str, Any] = OrderedDict()  # per worker process: one locked DuckDB per simulation


class SqlJobRequest(BaseModel):
    """A read-only SQL query run as a batch job (no row cap), its result as a file and optionally a MyDB table."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["sql"] = "sql"
    dataset: str | None = Field(
        default=None,
        validation_alias=AliasChoices("dataset", "sim"),
        description="A cosmology simulation (also spelled sim): the query sees its halos, trees and snapshots. "
        "Unset: MyDB SQL over mydb.NAME, OWNER.NAME and SIM.halos.",
    )
    sql: str = Field(min_length=1, max_length=SQL_CHARS, description="One SELECT statement.")
    format: Literal["parquet", "csv", "hdf5"] = Field(
        default="parquet", description="The result file's format."
    )
    into: str | None = Field(default=None, description="Also save the result as this table of your MyDB.")


def _check_select(sql: str) -> None:
    """Refuse what is not one SELECT before the job is queued (the run checks again)."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise InvalidInput(f"SQL does not parse: {exc}") from None
    finally:
        con.close()
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise InvalidInput("a sql job runs exactly one SELECT statement")


def _catalog_engine(sim_path: str, timeout: float, memory_limit: str) -> Any:
    """The simulation's locked DuckDB with no row cap, opened once per worker process."""
    from pathlib import Path

    from labservice.datasets.simulation import Simulation
    from labservice.datasets.sql import SqlEngine

    def make() -> Any:
        sim = Simulation(sim_path)
        return SqlEngine(Path(sim_path) / "halos.parquet", sim.snapshots(), NO_CAP, timeout, memory_limit)

    return parts.cached(_engines, f"{sim_path}|{timeout}|{memory_limit}", make, keep=2)


def _run_query(spec: dict[str, Any]) -> pd.DataFrame:
    from labservice.datasets.mydb import from_spec

    if spec.get("sim_path"):
        return (
            _catalog_engine(spec["sim_path"], spec["timeout"], spec["memory_limit"]).query(spec["sql"]).frame
        )
    mydb = from_spec(spec["mydb"])
    return mydb.sql(spec["user_id"], spec["sql"], max_rows=None, timeout=spec["timeout"]).frame


def run_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the query and commit its rows as Parquet (idempotent)."""
    from labservice.datasets.mydb import arrow_of, parquet_bytes

    scratch, job = parts.scratch_of(spec), spec["job"]
    done = parts.committed(scratch, job, 0)
    if done is not None:
        return done
    frame = _run_query(spec)  # SQL errors are the caller's: not retried
    data = parquet_bytes(arrow_of(frame))
    entry = parts.put_object(scratch, job, parts.part_name(0, "parquet"), data, "writing the result")
    return parts.commit(scratch, job, 0, {"part": 0, "rows": len(frame), "files": [entry]})


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _write_hdf5(path: str, frame: pd.DataFrame, sql: str) -> None:
    """One dataset per column at the root (strings as UTF-8), the column order and the query as attributes."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["columns"] = [str(c) for c in frame.columns]
        f.attrs["sql"] = sql
        f.attrs["rows"] = len(frame)
        for name in frame.columns:
            col = frame[name]
            if col.dtype.kind in "biuf":
                f.create_dataset(str(name), data=col.to_numpy())
            elif col.dtype.kind == "M":
                f.create_dataset(
                    str(name), data=col.astype(str).to_numpy().astype(object), dtype=h5py.string_dtype()
                )
            else:
                values = np.array(["" if v is None else str(v) for v in col], dtype=object)
                f.create_dataset(str(name), data=values, dtype=h5py.string_dtype())


def finalize(spec: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write ``result.<format>``, save into MyDB when asked, and write the manifest."""
    import pyarrow.parquet as pq

    from labservice.datasets import export
    from labservice.datasets.mydb import from_spec

    scratch, job, fmt = parts.scratch_of(spec), spec["job"], spec["format"]
    raw = with_retries(lambda: scratch.read_bytes(job, parts.part_name(0, "parquet")), "reading the result")
    table = pq.read_table(io.BytesIO(raw))
    if spec.get("into"):
        from_spec(spec["mydb"]).save(spec["user_id"], spec["into"], table)
    name = f"result.{fmt}"
    if fmt == "parquet":
        entry = parts.put_result(scratch, job, name, lambda tmp: _write_bytes(tmp, raw))
    elif fmt == "csv":
        frame = table.to_pandas()
        entry = parts.put_result(scratch, job, name, lambda tmp: _write_bytes(tmp, export.table_csv(frame)))
    else:
        frame = table.to_pandas()
        entry = parts.put_result(scratch, job, name, lambda tmp: _write_hdf5(tmp, frame, spec["sql"]))
    extra = {"rows": table.num_rows, **({"into": f"mydb.{spec['into']}"} if spec.get("into") else {})}
    return parts.write_manifest(
        scratch, job, [entry.to_dict() | {"format": fmt, "rows": table.num_rows}], **extra
    )


class Sql(JobKind):
    name = "sql"
    request = SqlJobRequest

    def _user(self, ctx: JobContext, req: SqlJobRequest) -> str | None:
        """The owner's user id, when the job needs MyDB (into, or MyDB SQL)."""
        if req.into is None and req.dataset is not None:
            return None
        if ctx.mydb is None:
            raise StorageUnavailable(
                "this server has no MyDB (no platform database), so sql jobs need sim and no into"
            )
        if ctx.owner is None:
            raise InvalidInput("sql jobs with into or without sim need a token of a user")
        return ctx.mydb.user_of_token(ctx.owner)[0]

    def check(self, ctx: JobContext, req: SqlJobRequest, points: np.ndarray | None) -> int:
        """Check the simulation, the table name and that the SQL is one SELECT; the size is known only after."""
        from labservice.datasets.mydb_store import check_table_name

        if req.dataset is not None:
            ctx.simulation_path(req.dataset)
        if req.into is not None:
            check_table_name(req.into.removeprefix("mydb."))
        self._user(ctx, req)
        _check_select(req.sql)
        return 0

    def plan(self, ctx: JobContext, job_id: str, req: SqlJobRequest) -> Plan:
        mydb = ctx.mydb
        spec = ctx.base_spec(job_id) | {
            "sql": req.sql, "format": req.format, "into": req.into.removeprefix("mydb.") if req.into else None,
            "timeout": mydb.job_timeout if mydb is not None else JOB_TIMEOUT, "user_id": self._user(ctx, req),
            "memory_limit": mydb.memory_limit if mydb is not None else "256MB",
            "mydb": mydb.spec() if mydb is not None else None,
            "sim_path": str(ctx.simulation_path(req.dataset)) if req.dataset is not None else None,
        }  # fmt: skip
        return Plan([spec | {"part": 0}], spec)

    run_part = staticmethod(run_part)
    finalize = staticmethod(finalize)


KIND = Sql()
