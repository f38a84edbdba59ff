"""MyDB: a personal database of tables kept server-side, shared read-only with groups, queried with SQL.

A table is a Parquet file in the user store (:mod:`labservice.datasets.mydb_store`) plus its row in the
platform database (``mydb_tables``: owner, name, file key, bytes, rows, columns). Who may read what comes
from :class:`labservice.sharing.Access` on every call (no cache), so an unshare holds at once on every
worker and host. No FastAPI here; errors are :mod:`labservice.errors` classes.

Names: a caller's own table is ``NAME`` or ``mydb.NAME``; a table shared with them is ``OWNER.NAME``.
Only the owner changes, replaces, shares or drops a table; anyone it is shared with gets a 403 that says so,
and anyone else a 404 like an unknown name (names cannot be probed).

Saving is atomic against the quota (``users.limits.mydb_mb``): the owner's quota row is locked (PostgreSQL
``SELECT ... FOR UPDATE``; SQLite ``BEGIN IMMEDIATE``), the usage summed and the row switched to the new file
in one transaction; a save over the quota is LimitExceeded (413) with the usage in the body.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from labservice.datasets.mydb_store import TableStore, check_table_name
from labservice.db import database, migrate
from labservice.db.schema import mydb_tables as MT
from labservice.db.schema import quotas as Q
from labservice.db.schema import table_shares as TS
from labservice.db.schema import tokens as T
from labservice.db.schema import users as U
from labservice.errors import Forbidden, InvalidInput, LimitExceeded, NotFound
from labservice.sharing import Access

MIB = 1 << 20
DEFAULT_QUOTA_MB = 1024  # users.limits without mydb_mb (labservice.users.UserLimits' default)
CSV, PARQUET = "csv", "parquet"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as one Parquet file (zstd)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def arrow_of(frame: pd.DataFrame) -> pa.Table:
    """A query result as an Arrow table; InvalidInput when it cannot be stored (duplicate or odd columns)."""
    names = [str(c) for c in frame.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(
            f"the result has several columns named {', '.join(dupes)}; name each once (AS other_name)"
        )
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise InvalidInput(f"the result cannot be stored as a table: {exc}") from None


def parse_upload(data: bytes, fmt: str | None = None) -> pa.Table:
    """An uploaded CSV or Parquet body as an Arrow table (``fmt`` None: Parquet if it starts with PAR1)."""
    if not data:
        raise InvalidInput(
            "the upload is empty; send a CSV (with a header row) or a Parquet file as the body"
        )
    fmt = fmt or (PARQUET if data[:4] == b"PAR1" else CSV)
    try:
        if fmt == PARQUET:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
        elif fmt == CSV:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(io.BytesIO(data))
        else:
            raise InvalidInput(f"upload format must be csv or parquet, not {fmt!r}")
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"the {fmt} upload does not parse: {str(exc)[:300]}") from None
    names = table.column_names
    if not names:
        raise InvalidInput("the upload has no columns")
    bad = [n for n in names if not n or not n.strip()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if bad or dupes:
        raise InvalidInput(
            f"every column needs its own non-empty name; fix {', '.join(dupes) or 'the empty names'}"
        )
    return table


def columns_of(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


class MyDB:
    """The tables of every user: save, upload, read, list, share, drop, and SQL over them.

    Parameters
    ----------
    where
        The platform database (URL or SQLite path) that holds users, groups and ``mydb_tables``.
    store_url, store_options
        The user store (local folder or fsspec URL) and its fsspec options.
    catalogs
        Returns the cosmology simulations SQL may name, id -> object with ``.path`` (its folder, holding
        ``halos.parquet``) and ``.snapshots()``; None: no catalogs.
    max_rows, timeout, memory_limit, threads
        The limits of every SQL query (the ``LABSERVICE_SQL_*`` settings).
    """

    def __init__(
        self,
        where: str | Path,
        store_url: str,
        store_options: dict[str, Any] | None = None,
        catalogs: Callable[[], Mapping[str, Any]] | None = None,
        max_rows: int = 100_000,
        timeout: float = 10.0,
        memory_limit: str = "256MB",
        threads: int = 1,
    ) -> None:
        self.where = str(where)
        self.db = database(where)
        if self.db.is_sqlite:
            migrate(self.db)
        self.access = Access(where)
        self.store = TableStore(store_url, store_options)
        self.catalogs = catalogs or dict
        self.max_rows, self.timeout, self.memory_limit, self.threads = (
            int(max_rows),
            float(timeout),
            memory_limit,
            threads,
        )
        self.job_timeout = 3600.0  # seconds a submitted query (job kind sql) may run

    @classmethod
    def from_settings(
        cls, settings: Any, catalogs: Callable[[], Mapping[str, Any]] | None = None
    ) -> MyDB | None:
        """The MyDB of a server (None when it has no platform database, hence no users)."""
        where = settings.tokens_database_url()
        if where is None:
            return None
        mydb = cls(
            where,
            user_store_url(settings),
            settings.user_store_options,
            catalogs,
            settings.sql_max_rows,
            settings.sql_timeout_seconds,
            settings.sql_memory_limit,
            settings.sql_threads,
        )
        mydb.job_timeout = settings.sql_job_timeout_seconds
        return mydb

    def spec(self) -> dict[str, Any]:
        """What a job worker needs to rebuild this MyDB (JSON types; see :func:`from_spec`)."""
        url, options = self.store.spec()
        data_dir = getattr(self.catalogs, "data_dir", None)
        return {
            "where": self.where,
            "store_url": url,
            "store_options": options,
            "memory_limit": self.memory_limit,
            "threads": self.threads,
            "data_dir": None if data_dir is None else str(data_dir),
        }

    # -- who: users and their quota -----------------------------------------------------------------
    def user_of_token(self, token_id: str) -> tuple[str, str]:
        """(user id, user name) of a token (jobs record their token)."""
        q = (
            sa.select(U.c.id, U.c.name)
            .select_from(T.join(U, U.c.id == T.c.user_id))
            .where(T.c.id == token_id)
        )
        with self.db.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFound(
                "this token belongs to no user, so it has no MyDB; use a token made with --user NAME"
            )
        return row[0], row[1]

    @staticmethod
    def _quota(conn: sa.Connection, user_id: str) -> int:
        row = conn.execute(sa.select(U.c.limits).where(U.c.id == user_id)).first()
        limits = json.loads(row[0] or "{}") if row is not None else {}
        return int(limits.get("mydb_mb", DEFAULT_QUOTA_MB)) * MIB

    def usage(self, user_id: str) -> dict[str, int]:
        """MyDB bytes used and allowed, and the number of tables."""
        with self.db.connect() as conn:
            used, n = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(MT.c.bytes), 0), sa.func.count()).where(
                    MT.c.owner_id == user_id
                )
            ).one()
            quota = self._quota(conn, user_id)
        return {"used_bytes": int(used), "quota_bytes": quota, "tables": int(n)}

    # -- finding tables -----------------------------------------------------------------------------
    def _readable(self, user_id: str) -> list[dict[str, Any]]:
        return self.access.readable_tables(user_id)

    def find(self, user_id: str, ref: str) -> dict[str, Any]:
        """The row a name refers to: ``NAME``/``mydb.NAME`` (own) or ``OWNER.NAME`` (own or shared with the user).

        An unknown name and a table not shared with the user answer the same NotFound.
        """
        if not isinstance(ref, str) or ref.count(".") > 1:
            raise InvalidInput(
                f"{str(ref)[:80]!r} is not a valid table name: use NAME, mydb.NAME or OWNER.NAME"
            )
        owner, _, name = ref.rpartition(".")
        check_table_name(name)
        for row in self._readable(user_id):
            mine = not row["shared"]
            if row["name"] == name and (
                (owner in ("", "mydb") and mine) or (owner and owner == row["owner_name"])
            ):
                return row
        raise NotFound(
            f"no table {ref!r} among your tables or those shared with you; GET /api/v1/mydb/tables lists them"
        )

    def _own(self, user_id: str, ref: str, action: str) -> dict[str, Any]:
        """The caller's own table for a change; 403 for a table only shared with them."""
        row = self.find(user_id, ref)
        if row["shared"]:
            raise Forbidden(
                f"{row['owner_name']}.{row['name']} is shared with you read-only (through {', '.join(row['groups'])}); "
                f"only {row['owner_name']} can {action} it. Save a copy: POST /api/v1/mydb/sql with "
                f'{{"sql": "SELECT * FROM {row["owner_name"]}.{row["name"]}", "into": "my_copy"}}'
            )
        return row

    def _own_name(self, user_id: str, ref: str) -> str:
        """The table name of a write target: ``NAME``, ``mydb.NAME`` or ``<own user>.NAME``."""
        if not isinstance(ref, str) or ref.count(".") > 1:
            raise InvalidInput(f"{str(ref)[:80]!r} is not a valid table name: use NAME or mydb.NAME")
        owner, _, name = ref.rpartition(".")
        check_table_name(name)
        if owner not in ("", "mydb"):
            with self.db.connect() as conn:
                me = conn.execute(sa.select(U.c.name).where(U.c.id == user_id)).scalar()
            if owner != me:
                self._own(user_id, ref, "replace")  # 403 if shared with the caller, else 404
        return name

    def describe(self, row: dict[str, Any], user_id: str) -> dict[str, Any]:
        """What the API shows of a table."""
        mine = not row["shared"]
        return {
            "name": row["name"],
            "ref": f"mydb.{row['name']}" if mine else f"{row['owner_name']}.{row['name']}",
            "owner": row["owner_name"],
            "shared": not mine,  # True: someone else's, shared with you read-only
            "groups": row.get("shared_with", []) if mine else row["groups"],
            "rows": int(row["rows"]),
            "bytes": int(row["bytes"]),
            "columns": json.loads(row["columns"] or "[]"),
            "created": _iso(row["created"]),
        }

    def tables(self, user_id: str, shared: bool | None = None) -> list[dict[str, Any]]:
        """The user's tables (``shared`` False), those shared with them (True), or both (None)."""
        rows = self._readable(user_id)
        own = [r["id"] for r in rows if not r["shared"]]
        shares: dict[str, list[str]] = {}
        if own:
            with self.db.connect() as conn:
                for tid, group in conn.execute(
                    sa.select(TS.c.table_id, TS.c.group_name).where(TS.c.table_id.in_(own))
                ):
                    shares.setdefault(tid, []).append(group)
        out = []
        for r in rows:
            if shared is None or bool(r["shared"]) == shared:
                out.append(self.describe({**r, "shared_with": sorted(shares.get(r["id"], []))}, user_id))
        return out

    def info(self, user_id: str, ref: str) -> dict[str, Any]:
        row = self.find(user_id, ref)
        groups = [] if row["shared"] else self.access.table_groups(row["id"])
        return self.describe({**row, "shared_with": groups}, user_id)

    # -- reading ------------------------------------------------------------------------------------
    def read(self, user_id: str, ref: str, limit: int | None = None, offset: int = 0) -> pd.DataFrame:
        """A readable table's rows (``limit`` rows from ``offset``; all by default) as a DataFrame."""
        import pyarrow.parquet as pq

        def whole(row: dict[str, Any]) -> pa.Table:
            with self.store.open(row["key"]) as f:
                return pq.read_table(f)

        table = self._current(user_id, ref, whole)[1]
        if offset or limit is not None:
            table = table.slice(int(offset), limit)
        return table.to_pandas()

    def points(self, user_id: str, ref: str) -> np.ndarray:
        """The (N, 3) float64 points of a readable table's columns x, y, z (a sensor layout)."""
        import pyarrow.parquet as pq

        row = self.find(user_id, ref)
        names = [c["name"] for c in json.loads(row["columns"] or "[]")]
        missing = [c for c in ("x", "y", "z") if c not in names]
        if missing:
            raise InvalidInput(
                f"table {ref!r} has no column {', '.join(missing)}; points need x, y and z (it has "
                f"{', '.join(names[:20])})"
            )

        def xyz(row: dict[str, Any]) -> pa.Table:
            with self.store.open(row["key"]) as f:
                return pq.read_table(f, columns=["x", "y", "z"])

        table = self._current(user_id, ref, xyz)[1]
        try:
            return np.column_stack(
                [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in ("x", "y", "z")]
            )
        except (ValueError, TypeError, pa.ArrowException):
            raise InvalidInput(f"columns x, y, z of {ref!r} must be numbers") from None

    def parquet(self, user_id: str, ref: str) -> tuple[dict[str, Any], bytes]:
        """A readable table's row and its stored Parquet file."""
        return self._current(user_id, ref, lambda row: self.store.get(row["key"]))

    def _current(
        self, user_id: str, ref: str, read: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any], Any]:
        """``read(row)`` of the table's current version: one replaced meanwhile (its file gone) is looked up again."""
        row = self.find(user_id, ref)
        try:
            return row, read(row)
        except NotFound:
            row = self.find(user_id, ref)
            return row, read(row)

    # -- writing ------------------------------------------------------------------------------------
    def save(self, user_id: str, name: str, table: pa.Table | pd.DataFrame) -> dict[str, Any]:
        """Save (or replace) the user's table ``name``; LimitExceeded (413) over the quota, with the usage."""
        name = self._own_name(user_id, name)
        if isinstance(table, pd.DataFrame):
            table = arrow_of(table)
        data = parquet_bytes(table)
        key = self.store.new_key(user_id, name)
        self.store.put(key, data)
        old_key = None
        try:
            with self.db.connect(write=True) as conn:
                if not self.db.is_sqlite:  # one save at a time per user: the quota check cannot be raced
                    lock_key = f"mydb:{user_id}"
                    conn.execute(
                        pg_insert(Q)
                        .values(owner=lock_key, created=time.time())
                        .on_conflict_do_nothing(index_elements=["owner"])
                    )
                    conn.execute(sa.select(Q.c.owner).where(Q.c.owner == lock_key).with_for_update())
                old = conn.execute(
                    sa.select(MT.c.id, MT.c.key, MT.c.bytes).where(
                        MT.c.owner_id == user_id, MT.c.name == name
                    )
                ).first()
                used = int(conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(MT.c.bytes), 0)).where(MT.c.owner_id == user_id)
                ).scalar_one()) - (int(old[2]) if old else 0)  # fmt: skip
                quota = self._quota(conn, user_id)
                if used + len(data) > quota:
                    raise LimitExceeded(
                        f"saving {name!r} ({len(data) / MIB:.2f} MiB) would put your MyDB at "
                        f"{(used + len(data)) / MIB:.2f} MiB, over your quota of {quota / MIB:.0f} MiB (you use "
                        f"{used / MIB:.2f} MiB); drop tables (DELETE /api/v1/mydb/tables/NAME) or save fewer rows",
                        used_bytes=used,
                        quota_bytes=quota,
                        table_bytes=len(data),
                    )
                values = {
                    "key": key,
                    "bytes": len(data),
                    "rows": table.num_rows,
                    "columns": json.dumps(columns_of(table.schema)),
                    "created": time.time(),
                }
                if old is None:
                    conn.execute(
                        MT.insert().values(id=uuid.uuid4().hex[:12], owner_id=user_id, name=name, **values)
                    )
                else:
                    old_key = old[1]
                    conn.execute(MT.update().where(MT.c.id == old[0]).values(**values))
        except BaseException:
            self.store.delete(key)
            raise
        if old_key is not None:
            self.store.delete(old_key)  # readers that opened it already may fail once; they retry
        return self.info(user_id, f"mydb.{name}")

    def upload(self, user_id: str, name: str, data: bytes, fmt: str | None = None) -> dict[str, Any]:
        """Save an uploaded CSV or Parquet body as the user's table ``name``."""
        name = self._own_name(user_id, name)  # a bad name is refused before the body is parsed
        return self.save(user_id, name, parse_upload(data, fmt))

    def drop(self, user_id: str, ref: str) -> dict[str, Any]:
        """Drop the user's table (its shares go with it)."""
        row = self._own(user_id, ref, "drop")
        with self.db.connect(write=True) as conn:
            conn.execute(TS.delete().where(TS.c.table_id == row["id"]))
            conn.execute(MT.delete().where(MT.c.id == row["id"]))
        self.store.delete(row["key"])
        return {"dropped": f"mydb.{row['name']}"}

    def share(self, user_id: str, ref: str, group: str) -> dict[str, Any]:
        row = self._own(user_id, ref, "share")
        self.access.share_table(user_id, row["id"], group)
        return self.info(user_id, f"mydb.{row['name']}")

    def unshare(self, user_id: str, ref: str, group: str) -> dict[str, Any]:
        row = self._own(user_id, ref, "unshare")
        self.access.unshare_table(user_id, row["id"], group)
        return self.info(user_id, f"mydb.{row['name']}")

    # -- SQL --------------------------------------------------------------------------------------------
    def sql(
        self,
        user_id: str,
        query: str,
        truncate: bool = False,
        max_rows: int | None = -1,
        timeout: float | None = None,
    ) -> Any:
        """Read-only SQL over the user's tables (``mydb.NAME``), those shared with them (``OWNER.NAME``) and the
        catalogs (``SIM.halos``, ``SIM.trees``, ``SIM.snapshots``); see :func:`labservice.datasets.mydb_sql.run`.
        ``max_rows`` -1: the configured cap; None: no cap (jobs)."""
        from labservice.datasets.mydb_sql import run

        cap = self.max_rows if max_rows == -1 else max_rows
        return run(self, user_id, query, truncate, cap, self.timeout if timeout is None else timeout)


class folder_catalogs:  # noqa: N801 - used like a function
    """``catalogs`` for a MyDB away from the app (job engines, workers): the simulations under ``data_dir``,
    each opened once per process when a query first names it."""

    _open: dict[str, Any] = {}
    _lock = threading.Lock()

    def __init__(self, data_dir: str | Path | None) -> None:
        self.data_dir = data_dir

    def __call__(self) -> dict[str, Any]:
        if self.data_dir is None:
            return {}
        from labservice.datasets.catalog import discover_simulations

        return {
            sim_id: _LazySimulation(Path(path))
            for sim_id, path in discover_simulations(self.data_dir).items()
        }


class _LazySimulation:
    """What SQL needs of a simulation (its folder, its snapshots), opening it only when asked."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def snapshots(self) -> pd.DataFrame:
        from labservice.datasets.simulation import Simulation

        key = str(self.path.resolve())
        with folder_catalogs._lock:
            sim = folder_catalogs._open.get(key)
            if sim is None:
                sim = folder_catalogs._open[key] = Simulation(key)
        return sim.snapshots()


_from_spec: dict[str, MyDB] = {}


def from_spec(spec: dict[str, Any]) -> MyDB:
    """The MyDB a job worker rebuilds from :meth:`MyDB.spec` (one per process and spec)."""
    key = json.dumps(spec, sort_keys=True)
    mydb = _from_spec.get(key)
    if mydb is None:
        mydb = _from_spec[key] = MyDB(
            spec["where"],
            spec["store_url"],
            spec["store_options"],
            folder_catalogs(spec.get("data_dir")),
            memory_limit=spec["memory_limit"],
            threads=spec["threads"],
        )
    return mydb


def user_store_url(settings: Any) -> str:
    """The user store: ``settings.user_store_url``, else ``<data_dir>/mydb``, else ``mydb`` beside the SQLite
    token file, else ``<cwd>/mydb``."""
    url = getattr(settings, "user_store_url", None)
    if url:
        return str(url)
    if settings.data_dir is not None:
        return str(Path(settings.data_dir) / "mydb")
    token_db = getattr(settings, "token_db", None)
    return str((Path(token_db).parent if token_db else Path.cwd()) / "mydb")
