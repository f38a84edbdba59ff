"""SQL over MyDB: one locked DuckDB per query, holding only what the caller may read.

The tables the caller may read (their own as ``mydb.NAME``, those shared with them as ``OWNER.NAME``) and
the cosmology catalogs (``SIM.halos``, ``SIM.trees``, ``SIM.snapshots``) are attached as views over lazy
Arrow datasets (only the row groups and columns a query touches are read), then the connection is locked
exactly like the catalog SQL endpoint (:func:`labservice.datasets.sql.lock_down`: no files, network,
extensions or Python variables; a memory limit; no spilling) and the query runs under the same time and row
limits (:func:`labservice.datasets.sql.run_select`). A table the caller may not read is simply not there:
naming it is the same SQL error as naming one that does not exist, never data.

Only names that occur in the query text are attached (a table not named cannot be read), so a user with many
tables does not pay for all of them on every query.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import pyarrow as pa

from labservice.datasets.sql import TREE_VIEW_COLUMNS, SqlResult, lock_down, run_select
from labservice.errors import RateLimited, StorageUnavailable

# At most this many MyDB queries run at once per process: each has its own DuckDB and memory limit.
MAX_CONCURRENT = 4
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)
_datasets: OrderedDict[tuple[str, str], Any] = OrderedDict()  # (store url, key) -> pyarrow dataset
_datasets_lock = threading.Lock()
_CACHE = 256
HINT = "mydb.NAME (yours), OWNER.NAME (shared with you), SIM.halos, SIM.trees, SIM.snapshots"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _store_dataset(store: Any, key: str) -> Any:
    """A lazy Arrow dataset over one stored table version (versions never change, so it is cached)."""
    import pyarrow.dataset as pds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    cache_key = (store.url, key)
    with _datasets_lock:
        hit = _datasets.get(cache_key)
        if hit is not None:
            _datasets.move_to_end(cache_key)
            return hit
    path = store.path(key)
    fs = None if store.local else PyFileSystem(FSSpecHandler(store.fs))
    ds = pds.dataset(path, format="parquet", filesystem=fs)
    with _datasets_lock:
        _datasets[cache_key] = ds
        while len(_datasets) > _CACHE:
            _datasets.popitem(last=False)
    return ds


def _catalog_dataset(path: Any) -> Any:
    import pyarrow.dataset as pds

    return pds.dataset(str(path), format="parquet")


def _named(query_lower: str, name: str) -> bool:
    return name.lower() in query_lower


def attach(con: Any, mydb: Any, user_id: str, query: str) -> list[str]:
    """Attach the tables ``query`` may name; returns their qualified names (for messages)."""
    q = query.lower()
    names: list[str] = []
    schemas: set[str] = set()
    n = 0

    def view(schema: str, name: str, source: Any, select: str = "*") -> None:
        nonlocal n
        if schema not in schemas:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(schema)}")
            schemas.add(schema)
        con.register(f"_src{n}", source)
        con.execute(f"CREATE VIEW {_quote(schema)}.{_quote(name)} AS SELECT {select} FROM _src{n}")
        names.append(f"{schema}.{name}")
        n += 1

    catalogs = dict(mydb.catalogs())
    for sim_id, sim in sorted(catalogs.items()):
        if sim_id == "mydb" or not _named(q, sim_id):
            continue
        halos = _catalog_dataset(sim.path / "halos.parquet")
        view(sim_id, "halos", halos)
        view(sim_id, "trees", halos, ", ".join(_quote(c) for c in TREE_VIEW_COLUMNS))
        view(sim_id, "snapshots", sim.snapshots())
    for row in mydb.access.readable_tables(user_id):
        if not _named(q, row["name"]):
            continue
        # own tables are mydb.NAME, and also OWNER.NAME as others see them; shared ones OWNER.NAME only
        for schema in [row["owner_name"]] if row["shared"] else ["mydb", row["owner_name"]]:
            if not _named(q, schema) or (
                schema in catalogs and row["name"] in ("halos", "trees", "snapshots")
            ):
                continue  # not named; or a user named like a simulation: the catalog keeps its names
            view(schema, row["name"], _store_dataset(mydb.store, row["key"]))
    return names


def run(
    mydb: Any, user_id: str, query: str, truncate: bool, max_rows: int | None, timeout: float
) -> SqlResult:
    """Run one read-only SELECT for ``user_id`` over what they may read (see the module docstring)."""
    import duckdb

    if not _slots.acquire(timeout=timeout):
        raise RateLimited(
            f"{MAX_CONCURRENT} MyDB queries are running on this server process; try again in a moment",
            retry_after=1.0,
        )
    try:
        con = duckdb.connect(":memory:", config={"threads": mydb.threads})
        try:
            try:
                attach(con, mydb, user_id, query)
            except (
                OSError,
                pa.ArrowException,
            ) as exc:  # a file replaced or dropped meanwhile, or the store down
                raise StorageUnavailable(
                    f"a table could not be opened ({exc}); try again", retry_after=1.0
                ) from None
            lock_down(con, mydb.memory_limit)
            return run_select(
                con, threading.Lock(), query, max_rows, timeout, mydb.memory_limit, truncate, HINT
            )
        finally:
            con.close()
    finally:
        _slots.release()
