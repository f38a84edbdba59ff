"""Read-only SQL over a cosmology dataset's catalogs and trees, in a locked-down DuckDB (Millennium style).

The tables are loaded into an in-memory database first; then the connection is locked: no file, network or
extension access (``enable_external_access=false``, no extension auto-install/auto-load), a memory limit, a
thread count and ``lock_configuration=true`` so no query can undo any of it. On top, only single SELECT
statements are accepted, and a timer thread interrupts queries that run past ``timeout``.

Every limit answers a clear error (the service maps them to HTTP 4xx): more than ``max_rows`` rows is
LimitExceeded (413) unless the caller asks for the first ``max_rows`` with ``truncate=True``; running past
``timeout`` seconds and needing more than ``memory_limit`` (nothing spills to disk) are LimitExceeded too.
The service takes the limits from ``LABSERVICE_SQL_*`` settings and lists them in the dataset metadata.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pandas as pd

from labservice.errors import InvalidInput, LimitExceeded

TREE_VIEW_COLUMNS = (
    "id", "snap", "mass", "descendantId", "firstProgenitorId", "nextProgenitorId", "lastProgenitorId", "mainLeafId",
    "treeRootId",
)


class SqlResult:
    """A query's rows as a DataFrame, and whether the row cap cut them."""

    def __init__(self, frame: pd.DataFrame, truncated: bool) -> None:
        self.frame = frame
        self.truncated = truncated


class SqlEngine:
    """A locked DuckDB over ``halos`` (every halo, catalog + tree columns), ``trees`` and ``snapshots``.

    Parameters
    ----------
    halos_parquet : path
        The dataset's ``halos.parquet``.
    snapshots : DataFrame, optional
        Rows of snap, a, redshift, n_halos.
    max_rows, timeout, memory_limit, threads : limits of every query (rows, seconds, DuckDB memory such as
        ``"256MB"``, worker threads).
    """

    def __init__(
        self,
        halos_parquet: str | Path,
        snapshots: pd.DataFrame | None = None,
        max_rows: int = 100_000,
        timeout: float = 10.0,
        memory_limit: str = "256MB",
        threads: int = 1,
    ) -> None:
        self.max_rows, self.timeout = int(max_rows), float(timeout)
        self.memory_limit, self.threads = memory_limit, int(threads)
        con = duckdb.connect(":memory:", config={"threads": self.threads})
        self._load(con, halos_parquet, snapshots)
        lock_down(con, memory_limit)
        self._con = con
        self._lock = threading.Lock()

    @staticmethod
    def _load(con: duckdb.DuckDBPyConnection, halos_parquet: str | Path, snapshots: pd.DataFrame | None,
              schema: str = "main") -> None:
        """Create ``halos``, ``trees`` and ``snapshots`` in ``schema`` (before the lock; the TAP engine loads
        every simulation, each in its own schema, through this)."""
        q = f'"{schema}".'
        con.execute(f"CREATE TABLE {q}halos AS SELECT * FROM read_parquet(?)", [str(halos_parquet)])
        columns = ", ".join('"' + c + '"' for c in TREE_VIEW_COLUMNS)
        con.execute(f"CREATE VIEW {q}trees AS SELECT {columns} FROM {q}halos")
        if snapshots is not None:
            con.register("_snapshots_frame", snapshots)
            con.execute(f"CREATE TABLE {q}snapshots AS SELECT * FROM _snapshots_frame")
            con.unregister("_snapshots_frame")

    def tables(self) -> list[str]:
        return ["halos", "snapshots", "trees"]

    def limits(self) -> dict[str, object]:
        """The limits every query runs under (for the dataset metadata)."""
        return {"max_rows": self.max_rows, "timeout_seconds": self.timeout, "memory_limit": self.memory_limit,
                "threads": self.threads, "tables": self.tables()}

    def query(self, sql: str, truncate: bool = False) -> SqlResult:
        """Run one read-only SELECT; raises InvalidInput for anything else or any SQL error.

        More than ``max_rows`` rows raise LimitExceeded, or with ``truncate=True`` return the first
        ``max_rows`` with ``truncated`` set.
        """
        return run_select(self._con, self._lock, sql, self.max_rows, self.timeout, self.memory_limit, truncate,
                          "halos, trees, snapshots")

    def raw(self, sql: str):
        """Execute on the locked connection without the SELECT-only filter (tests show the lock holds)."""
        with self._lock:
            return self._con.execute(sql).fetchall()

    def close(self) -> None:
        self._con.close()


def lock_down(con: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
    """Lock a connection whose tables are loaded: no files, network, extensions or Python variables; a memory
    limit; nothing spills to disk; and no later statement can change any of it."""
    for setting in (
        "SET enable_external_access = false",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET python_enable_replacements = false",  # a query must not reach the server's Python variables
        f"SET memory_limit = '{memory_limit}'",
        "SET max_temp_directory_size = '0B'",
        "SET lock_configuration = true",
    ):
        con.execute(setting)


def run_select(
    con: duckdb.DuckDBPyConnection,
    lock: threading.Lock,
    sql: str,
    max_rows: int | None,
    timeout: float,
    memory_limit: str,
    truncate: bool = False,
    tables: str = "halos, trees, snapshots",
) -> SqlResult:
    """One read-only SELECT on a locked connection, with the time, memory and row limits (``max_rows`` None:
    no row cap). ``tables`` names what the caller may query, for the message refusing other statements."""
    with lock:  # even parsing uses the connection, which refuses a second caller instead of waiting
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise InvalidInput(f"SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise InvalidInput(f"send exactly one SQL statement; got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise InvalidInput(f"only SELECT queries are allowed (tables: {tables}); got {kind.name}")
    with lock:  # one DuckDB connection: queries take turns
        timer = threading.Timer(timeout, con.interrupt)
        timer.start()
        try:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall() if max_rows is None else cur.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise LimitExceeded(
                f"the query ran longer than {timeout:g} s; add filters or a LIMIT, or submit it as a job"
            ) from None
        except duckdb.OutOfMemoryException:
            raise LimitExceeded(
                f"the query needs more than the {memory_limit} of memory allowed; aggregate or filter "
                "before sorting or joining, select fewer columns, or add a LIMIT"
            ) from None
        except duckdb.Error as exc:
            raise InvalidInput(f"SQL error: {exc}") from None
        finally:
            timer.cancel()
    truncated = max_rows is not None and len(rows) > max_rows
    if truncated and not truncate:
        raise LimitExceeded(
            f"the query returns more than {max_rows} rows (the row cap); add filters or a LIMIT, page "
            "with ORDER BY ... LIMIT ... OFFSET, or ask for the first rows only with truncate=true"
        )
    return SqlResult(pd.DataFrame(rows[:max_rows] if truncated else rows, columns=names), truncated)
