"""A real PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` on a free loopback port in a temporary folder.

``postgres_server`` (session scope) is shared; ``postgres_url`` gives each test a fresh, empty database on
it. A test that stops or restarts the server takes its own, ``private_postgres``. Every server is stopped
and its folder removed at the end. PostgreSQL refuses to run as root, so the cluster belongs to the
``postgres`` user (Debian's package creates it). Skips when PostgreSQL is not installed
(``apt-get install postgresql``, or ``make services``).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labservice.devserver import free_ports

START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections


def _bin(name: str) -> str | None:
    """A PostgreSQL program: on PATH, else beside pg_ctl's real location (Debian keeps initdb there)."""
    found = shutil.which(name)
    if found:
        return found
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        beside = Path(os.path.realpath(pg_ctl)).parent / name
        if beside.exists():
            return str(beside)
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


class PostgresServer:
    """One PostgreSQL cluster in ``folder``, restartable on the same port."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.port = port or free_ports(1)[0]
        self.pg_ctl, self.initdb = _bin("pg_ctl"), _bin("initdb")
        self.user = "postgres" if os.geteuid() == 0 else None  # root must hand the cluster to postgres

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database (use :meth:`create_database` for a test's own)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = " ".join(shlex.quote(a) for a in args)
        full = ["su", self.user, "-s", "/bin/bash", "-c", cmd] if self.user else ["bash", "-c", cmd]
        done = subprocess.run(full, capture_output=True, text=True, timeout=START_TIMEOUT + 30)
        if check and done.returncode != 0:
            log = self.folder / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{cmd} failed ({done.returncode}): {done.stdout}{done.stderr}\n{tail}")
        return done

    def init(self) -> PostgresServer:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> PostgresServer:
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.folder / "postgres.log"),
                  "-t", str(START_TIMEOUT), "-w", "start")  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """``pg_ctl restart``: every connection is cut, the server is back on the same port."""
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.folder / "postgres.log"),
                  "-m", "fast", "-t", str(START_TIMEOUT), "-w", "restart")  # fmt: skip

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def _server(prefix: str) -> Iterator[PostgresServer]:
    if _bin("pg_ctl") is None or _bin("initdb") is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql, or `make services`)")
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    server = PostgresServer(folder)
    try:
        server.init().start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _server("lab-pg-")


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database on the shared server (``postgresql://`` URL); its pool is closed after the test."""
    from labservice.db.connect import forget

    url = postgres_server.create_database()
    yield url
    forget(url)


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, to stop or restart."""
    yield from _server("lab-pg-own-")
