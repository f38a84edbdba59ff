"""Today's tokens.sqlite and jobs.sqlite files move into the platform database with nothing lost."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from labservice.db.legacy import LEGACY_JOBS_DDL, LEGACY_TOKENS_DDL
from labservice.db.migrate import head
from labservice.devserver import ServerThread
from labservice.errors import Unauthorized
from labservice.jobs.registry import JobRegistry
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore


def old_token(path: Path, name: str, limits: Limits, revoked: bool = False) -> str:
    """A token written the way labservice's TokenStore wrote them before the platform database."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with sqlite3.connect(path) as db:
        db.execute(LEGACY_TOKENS_DDL)
        db.execute(
            "INSERT INTO tokens (id, name, hash, created, revoked, limits) VALUES (?, ?, ?, ?, ?, ?)",
            (token_id, name, hashlib.sha256(secret.encode()).hexdigest(), 1.7e9, int(revoked),
             json.dumps(limits.as_dict())),
        )  # fmt: skip
    return f"lab_{token_id}_{secret}"


OLD_JOBS = [
    # id, owner, status, done, total, files, nbytes, attempts
    ("a" * 16, "tok1", "done", 4, 4, [{"name": "cutout.h5", "size": 10, "sha256": "ab"}], 10, 1),
    ("b" * 16, "tok1", "running", 1, 4, [], 500, 2),
    ("c" * 16, "tok2", "failed", 0, 0, [], 0, 1),
]


def old_jobs(path: Path) -> None:
    """Job rows written the way the SQLite JobRegistry wrote them (WAL file, same columns)."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(LEGACY_JOBS_DDL)
        for n, (jid, owner, status, done, total, files, nbytes, attempts) in enumerate(OLD_JOBS):
            db.execute(
                "INSERT INTO jobs (id, owner, kind, params, status, done, total, created, started, finished,"
                " expires, error, files, nbytes, attempts) VALUES (?, ?, 'cutout', ?, ?, ?, ?, ?, ?, NULL, ?,"
                " ?, ?, ?, ?)",
                (jid, owner, json.dumps({"dataset": "d", "x": "0:8"}), status, done, total, 1.7e9 + n,
                 1.7e9 + n, 2e9 if status == "done" else None, "boom" if status == "failed" else None,
                 json.dumps(files), nbytes, attempts),
            )  # fmt: skip


def check_everything_is_there(where: str | Path, good: str, revoked: str) -> None:
    store = TokenStore(where)
    caller = store.verify(good)
    assert caller.name == "old-alice" and caller.limits.points_per_request == 777
    with pytest.raises(Unauthorized):
        store.verify(revoked)
    reg = JobRegistry(where)
    got = {r.id: r for r in reg.list()}
    assert sorted(got) == sorted(j[0] for j in OLD_JOBS)
    for jid, owner, status, done, total, files, nbytes, attempts in OLD_JOBS:
        r = got[jid]
        assert (r.owner, r.status, r.done, r.total, r.files, r.nbytes, r.attempts) == (
            owner, status, done, total, files, nbytes, attempts)  # fmt: skip
        assert r.params == {"dataset": "d", "x": "0:8"} and r.engine_id is None and not r.cancel_requested
    assert got["c" * 16].error == "boom" and reg.usage("tok1") == (1, 510)
    assert [r.id for r in reg.list(owner="tok1")] == ["b" * 16, "a" * 16]


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "labservice", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_db_upgrade_imports_old_files_into_postgresql_once(tmp_path: Path, postgres_url: str) -> None:
    tokens_file, jobs_file = tmp_path / "tokens.sqlite", tmp_path / "jobs.sqlite"
    good = old_token(tokens_file, "old-alice", Limits(points_per_request=777))
    revoked = old_token(tokens_file, "old-bob", Limits(), revoked=True)
    old_jobs(jobs_file)
    env = {"LABSERVICE_DATABASE_URL": postgres_url, "LABSERVICE_TOKEN_DB": str(tokens_file),
           "LABSERVICE_JOB_DB": str(jobs_file)}  # fmt: skip
    out = _cli("db", "upgrade", env=env)
    assert "migrated" in out and "imported 2 tokens" in out and "imported 3 jobs" in out, out
    check_everything_is_there(postgres_url, good, revoked)
    again = _cli("db", "upgrade", env=env)
    assert "already current" in again and "imported" not in again, again
    assert len(JobRegistry(postgres_url).list()) == 3 and len(TokenStore(postgres_url).list()) == 2
    # The old files are left as they were (a way back).
    with sqlite3.connect(tokens_file) as db:
        assert db.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] == 2
    # A token made with the CLI after the move lands in PostgreSQL too.
    made = _cli("token", "create", "--name", "new-carol", env=env).strip().splitlines()[-1]
    assert TokenStore(postgres_url).verify(made).name == "new-carol"


def test_old_files_named_by_settings_upgrade_in_place(tmp_path: Path) -> None:
    """With no database URL, LABSERVICE_TOKEN_DB / JOB_DB files keep serving, migrated where they are."""
    tokens_file, jobs_file = tmp_path / "tokens.sqlite", tmp_path / "jobs.sqlite"
    good = old_token(tokens_file, "old-alice", Limits(points_per_request=777))
    revoked = old_token(tokens_file, "old-bob", Limits(), revoked=True)
    old_jobs(jobs_file)
    check_everything_is_there_split(tokens_file, jobs_file, good, revoked)
    for path in (tokens_file, jobs_file):
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head()  # the newest revision
    # Opening them again (a restart) changes nothing.
    check_everything_is_there_split(tokens_file, jobs_file, good, revoked)


def check_everything_is_there_split(tokens_file: Path, jobs_file: Path, good: str, revoked: str) -> None:
    store, reg = TokenStore(tokens_file), JobRegistry(jobs_file)
    assert store.verify(good).limits.points_per_request == 777
    with pytest.raises(Unauthorized):
        store.verify(revoked)
    assert len(store.list()) == 2
    assert {r.id: (r.status, r.attempts) for r in reg.list()} == {j[0]: (j[2], j[7]) for j in OLD_JOBS}


def test_embedded_default_imports_old_files_at_start(tmp_path: Path) -> None:
    """`make run` after an upgrade: <data>/tokens.sqlite and <data>/scratch/jobs.sqlite move into
    <data>/labservice.sqlite when the app starts, and old tokens work over HTTP."""
    data = tmp_path / "data"
    (data / "scratch").mkdir(parents=True)
    good = old_token(data / "tokens.sqlite", "old-alice", Limits(points_per_request=777))
    revoked = old_token(data / "tokens.sqlite", "old-bob", Limits(), revoked=True)
    old_jobs(data / "scratch" / "jobs.sqlite")
    settings = Settings(data_dir=data)
    assert settings.tokens_database_url() == f"sqlite:///{data / 'labservice.sqlite'}"
    from labservice.app import create_app

    with ServerThread(create_app(settings)) as srv:
        ok = httpx.get(srv.url + "/api/v1/datasets", headers={"Authorization": f"Bearer {good}"})
        bad = httpx.get(srv.url + "/api/v1/datasets", headers={"Authorization": f"Bearer {revoked}"})
    assert ok.status_code == 200 and ok.headers["x-lab-caller"] == "old-alice"
    assert bad.status_code == 401
    # Jobs are imported by `labservice db upgrade` (the app imports them too when it runs the engine).
    out = _cli("db", "upgrade", "--data", str(data), env={})
    assert "imported 3 jobs" in out and "imported 2 tokens" not in out, out  # tokens came in at start
    check_everything_is_there(data / "labservice.sqlite", good, revoked)
