"""Importing the SQLite files of the single-process service (tokens.sqlite, jobs.sqlite) into the database.

The DDL below is what those files hold (labservice before the platform database): the importer's input
definition, and what tests build old files with. Rows are copied as they are, so an old token still
verifies (same id, same SHA-256 of the secret) and an old job is still listed. Each file is recorded in
``legacy_imports`` and skipped the next time; a row whose id is already there is left alone.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

from labservice.db import schema
from labservice.db.connect import Database

LEGACY_TOKENS_DDL = """
CREATE TABLE IF NOT EXISTS tokens (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    limits  TEXT NOT NULL
)
"""

LEGACY_JOBS_DDL = """
CREATE TABLE IF NOT EXISTS jobs (
    id        TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    kind      TEXT NOT NULL,
    params    TEXT NOT NULL,
    status    TEXT NOT NULL,
    done      INTEGER NOT NULL DEFAULT 0,
    total     INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL,
    started   REAL,
    finished  REAL,
    expires   REAL,
    error     TEXT,
    files     TEXT NOT NULL DEFAULT '[]',
    nbytes    INTEGER NOT NULL DEFAULT 0,
    attempts  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
"""

COLUMNS = {
    "tokens": ("id", "name", "hash", "created", "revoked", "limits"),
    "jobs": ("id", "owner", "kind", "params", "status", "done", "total", "created", "started", "finished",
             "expires", "error", "files", "nbytes", "attempts"),
}  # fmt: skip


def _legacy_rows(path: Path, table: str) -> list[dict] | None:
    """The rows of an old file's table; None when the file is not an old-format file (or is the database)."""
    uri = f"file:{path}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=30.0) as src:
        names = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if table not in names or "alembic_version" in names:
            return None  # not a legacy file: nothing there, or already a platform database
        cols = COLUMNS[table]
        rows = src.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
    return [dict(zip(cols, r, strict=True)) for r in rows]


def import_file(db: Database, path: str | Path, table: str) -> int | None:
    """Copy one old file's ``tokens`` or ``jobs`` rows into ``db`` once; the rows imported, None if skipped."""
    path = Path(path).absolute()
    if not path.is_file() or (db.path is not None and db.path.absolute() == path):
        return None
    source = f"{table}:{path}"
    with db.connect() as conn:
        if conn.execute(
            sa.select(schema.legacy_imports.c.source).where(schema.legacy_imports.c.source == source)
        ).first():
            return None
    rows = _legacy_rows(path, table)
    if rows is None:
        return None
    target = getattr(schema, table)
    added = 0
    with db.connect(write=True) as conn:
        if conn.execute(
            sa.select(schema.legacy_imports.c.source).where(schema.legacy_imports.c.source == source)
        ).first():
            return None  # another process imported it meanwhile
        have = {r[0] for r in conn.execute(sa.select(target.c.id))}
        new = [r for r in rows if r["id"] not in have]
        if new:
            conn.execute(target.insert(), new)
            if table == "tokens":  # each old token becomes the only token of a user named after it
                from labservice.tokens import adopt_orphans

                adopt_orphans(conn)
        added = len(new)
        conn.execute(schema.legacy_imports.insert().values(source=source, rows=added, imported=time.time()))
    return added
