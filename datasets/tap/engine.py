"""The TAP engine: one locked-down DuckDB holding every simulation's tables, each in a schema named by the
simulation (``cosmo64.halos``), plus ``TAP_SCHEMA``.

It is :class:`~labservice.datasets.sql.SqlEngine` (same lock-down, row cap, time limit, memory limit and
errors) with a loader that creates one schema per simulation instead of the single-simulation tables.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from labservice.datasets.sql import SqlEngine
from labservice.datasets.tap.schema import TAP


class TapEngine(SqlEngine):
    """A locked DuckDB over ``sims`` (id -> (halos.parquet, snapshots frame)) and the TAP_SCHEMA frames."""

    def __init__(self, sims: dict[str, tuple[str | Path, pd.DataFrame]], tap_schema: dict[str, pd.DataFrame],
                 max_rows: int = 100_000, timeout: float = 10.0, memory_limit: str = "256MB",
                 threads: int = 1) -> None:
        self._sims, self._tap_schema = dict(sims), dict(tap_schema)
        super().__init__("", None, max_rows, timeout, memory_limit, threads)

    def _load(self, con: duckdb.DuckDBPyConnection, halos_parquet: object, snapshots: object,
              schema: str = "main") -> None:  # type: ignore[override]
        for sim, (parquet, snaps) in sorted(self._sims.items()):
            con.execute(f'CREATE SCHEMA "{sim}"')
            SqlEngine._load(con, parquet, snaps, schema=sim)
        con.execute(f'CREATE SCHEMA "{TAP}"')
        for name, frame in self._tap_schema.items():
            con.register("_tap_frame", frame)
            con.execute(f'CREATE TABLE "{TAP}"."{name}" AS SELECT * FROM _tap_frame')
            con.unregister("_tap_frame")

    def tables(self) -> list[str]:
        names = [f"{s}.{t}" for s in sorted(self._sims) for t in ("halos", "trees", "snapshots")]
        return names + [f"{TAP}.{t}" for t in self._tap_schema]
