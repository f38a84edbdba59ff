"""One SQLAlchemy engine per database URL and process, and the transactions every store runs in.

SQLite (the embedded default): WAL, one writer at a time; a write transaction starts with ``BEGIN IMMEDIATE``
so a read-check-write (a quota check) cannot interleave with another writer. PostgreSQL (psycopg 3): a
pool whose connections are pinged before use, so a restarted server is noticed and reconnected to.

A database that cannot be reached raises :class:`~labservice.errors.DatabaseUnavailable` (HTTP 503 with
Retry-After) instead of a driver error.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event, exc

from labservice.errors import DatabaseUnavailable, InvalidInput

CONNECT_TIMEOUT = 3  # seconds a PostgreSQL connection attempt may take (requests wait this long at most)
SQLITE_BUSY_SECONDS = 30.0  # how long a SQLite writer waits for the write lock


def normalize_url(url: str | Path) -> str:
    """A SQLAlchemy URL from what a user writes: a path, ``sqlite:///...`` or ``postgresql://...``."""
    if isinstance(url, Path) or "://" not in str(url):
        return f"sqlite:///{Path(url).expanduser().absolute()}"
    text = str(url)
    scheme, _, rest = text.partition("://")
    if scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+"):  # always psycopg 3
        return f"postgresql+psycopg://{rest}"
    if scheme == "sqlite":
        return text
    raise InvalidInput(
        f"LABSERVICE_DATABASE_URL must start with sqlite:/// or postgresql://, not {scheme}://"
    )


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, None for another database."""
    u = sa.engine.make_url(url)
    return Path(u.database) if u.get_backend_name() == "sqlite" and u.database else None


class Database:
    """An engine plus the transaction helpers the stores use. Get one with :func:`database`."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.path = sqlite_path(self.url)
        self.is_sqlite = self.path is not None
        if self.is_sqlite:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # No pool: opening a SQLite file costs microseconds, and no file stays open after its last use
            # (tests open hundreds of them; a forked process inherits none).
            self.engine = sa.create_engine(
                self.url,
                connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
                poolclass=sa.pool.NullPool,
            )
            _sqlite_events(self.engine)
        else:
            self.engine = sa.create_engine(
                self.url,
                # tcp_user_timeout: a request on a pooled connection to a host cut off the network fails after
                # this long instead of waiting for TCP's retransmissions (minutes); the caller gets its 503.
                connect_args={"connect_timeout": CONNECT_TIMEOUT, "tcp_user_timeout": CONNECT_TIMEOUT * 1000},
                pool_pre_ping=True,  # a connection killed by a server restart is replaced, not used
                pool_size=5,
                max_overflow=10,
                pool_timeout=10,
                pool_recycle=1800,
            )
        self.upgraded = False
        self.upgrade_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The URL without its password, for messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def connect(self, write: bool = False, retry_seconds: float = 0.0) -> Iterator[sa.Connection]:
        """A connection inside one transaction, committed at the end (rolled back on an error).

        ``write`` starts SQLite's transaction with BEGIN IMMEDIATE. ``retry_seconds`` > 0 keeps trying to
        connect for that long; only connecting is retried, never a statement that may have run.
        """
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                conn = self.engine.connect()
                break
            except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as e:
                if time.monotonic() >= deadline or not self._outage(e):
                    raise self.unavailable(e) from e
                time.sleep(0.25)
        try:
            if write and self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as e:
            if self._outage(e):
                raise self.unavailable(e) from e
            raise
        finally:
            conn.close()

    def _outage(self, e: Exception) -> bool:
        """Whether a driver error means "cannot reach or lock the database now" (not a bug in a statement)."""
        if isinstance(e, exc.TimeoutError) or getattr(e, "connection_invalidated", False):
            return True
        if self.is_sqlite:
            text = str(e).lower()
            return any(s in text for s in ("locked", "busy", "unable to open", "disk i/o"))
        return True

    def unavailable(self, e: Exception) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"the platform database ({self.name}) cannot be reached right now; retry in a few seconds"
        )

    def ping(self) -> None:
        """``SELECT 1``; raises DatabaseUnavailable when the database cannot be reached (for /readyz)."""
        with self.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_events(engine: sa.Engine) -> None:
    # The sqlite3 module's own transaction handling is turned off, so BEGIN is ours (and can be IMMEDIATE).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}".strip())


_DATABASES: dict[tuple[str, int], Database] = {}
_LOCK = threading.Lock()


def database(url: str | Path) -> Database:
    """The process's :class:`Database` for a URL or SQLite path (one pool per process: never shared over fork)."""
    key = (normalize_url(url), os.getpid())
    with _LOCK:
        db = _DATABASES.get(key)
        if db is None:
            db = _DATABASES[key] = Database(key[0])
        return db


def forget(url: str | Path) -> None:
    """Close this process's pool for a URL (a test dropping its database)."""
    key = (normalize_url(url), os.getpid())
    with _LOCK:
        db = _DATABASES.pop(key, None)
    if db is not None:
        db.dispose()
