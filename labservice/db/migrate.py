"""Creating or migrating the schema with the Alembic revisions shipped in ``labservice/db/migrations``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from labservice.db.connect import Database, database

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x6C616273  # advisory lock id: one migrating process at a time ("labs")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision shipped."""
    return ScriptDirectory.from_config(_config()).get_current_head()  # type: ignore[return-value]


def current(db: Database) -> str | None:
    """The revision a database is at (None: empty or an old file never migrated)."""
    with db.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(db: Database) -> bool:
    """Bring ``db`` to the newest revision; True when something changed. Safe to run from many processes."""
    from alembic import command

    with db.upgrade_lock:
        if db.upgraded:
            return False
        if current(db) == head():
            db.upgraded = True
            return False
        # One transaction for every revision; SQLite's BEGIN IMMEDIATE or PostgreSQL's advisory lock makes a
        # second process wait, then find the schema already at head.
        with db.connect(write=True) as conn:
            if not db.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            if MigrationContext.configure(conn).get_current_revision() == head():
                db.upgraded = True
                return False
            cfg = _config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        db.upgraded = True
        return True


def upgrade(
    url: str | Path, legacy_tokens: str | Path | None = None, legacy_jobs: str | Path | None = None
) -> dict[str, object]:
    """`labservice db upgrade`: migrate the schema, then import old token and job files found (once each).

    Returns what was done: ``{"database", "revision", "migrated", "imported": {"tokens": n, "jobs": n}}``.
    """
    from labservice.db.legacy import import_file

    db = database(url)
    migrated = migrate(db)
    imported = {}
    for table, path in (("tokens", legacy_tokens), ("jobs", legacy_jobs)):
        if path is not None:
            n = import_file(db, path, table)
            if n is not None:
                imported[table] = n
    return {"database": db.name, "revision": head(), "migrated": migrated, "imported": imported}


def prepare(settings: object, with_jobs: bool) -> None:
    """App start-up: migrate the embedded SQLite database (importing old files once); check PostgreSQL.

    PostgreSQL is never migrated by a server process: run `labservice db upgrade` once per release. A
    PostgreSQL that cannot be reached is only logged: requests get 503 until it comes back.
    """
    import logging

    from labservice.errors import DatabaseUnavailable, LabError

    legacy = settings.legacy_database_files()  # type: ignore[attr-defined]
    wanted: dict[str, dict[str, Path]] = {}
    tokens_url = settings.tokens_database_url()  # type: ignore[attr-defined]
    if tokens_url is not None:
        wanted.setdefault(tokens_url, {})["legacy_tokens"] = legacy.get("tokens")  # type: ignore[assignment]
    if with_jobs:
        wanted.setdefault(settings.jobs_database_url(), {})["legacy_jobs"] = legacy.get("jobs")  # type: ignore[attr-defined]
    for url, files in wanted.items():
        db = database(url)
        if db.is_sqlite:
            upgrade(url, **files)
            continue
        try:
            at = current(db)
        except DatabaseUnavailable:
            logging.getLogger("labservice").warning(
                "database %s unreachable at start; answering 503", db.name
            )
            continue
        if at != head():
            raise LabError(
                f"the database {db.name} is at schema revision {at or 'none'}, this version needs {head()}: "
                "run `labservice db upgrade` (with the same LABSERVICE_DATABASE_URL) first"
            )
