"""The job registry (SQLite, WAL) and the scratch store, without a cluster."""

from __future__ import annotations

import hashlib
import sqlite3
import threading

import pytest

import labservice.db
from labservice.errors import InvalidInput, NotFound
from labservice.jobs.registry import JobRegistry
from labservice.jobs.scratch import Scratch


def test_registry_is_wal_and_follows_the_lifecycle(tmp_path):
    reg = JobRegistry(tmp_path / "jobs.sqlite")
    with sqlite3.connect(tmp_path / "jobs.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rec, reason = reg.insert_if_within("tokA", "cutout", {"dataset": "d"}, 100, 2, 1000)
    assert reason == "" and rec.status == "queued"
    assert reg.start(rec.id, total=4)
    reg.progress(rec.id, 3)
    got = reg.get(rec.id)
    assert (got.status, got.done, got.total, got.progress) == ("running", 3, 4, 0.75)
    assert reg.end(rec.id, "cancelled", "by owner")
    # A cancelled job can never be turned into a done one.
    assert not reg.finish(rec.id, [{"name": "x", "size": 1, "sha256": "0"}], 1, 0.0)
    assert reg.get(rec.id).status == "cancelled"
    assert reg.get(rec.id).nbytes == 0
    pub = reg.get(rec.id).public()
    assert pub["status"] == "cancelled" and pub["error"] == "by owner" and pub["finished"].endswith("Z")


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_where(request, tmp_path):
    """The embedded SQLite file, or a fresh database on the test PostgreSQL server (tests/plugin/postgres.py)."""
    if request.param == "sqlite":
        return tmp_path / "jobs.sqlite"
    url = request.getfixturevalue("postgres_url")
    labservice.db.upgrade(url)
    return url


def test_registry_quota_check_is_atomic_across_threads(registry_where):
    reg = JobRegistry(registry_where)
    results: list[str] = []
    lock = threading.Lock()

    def submit():
        rec, reason = reg.insert_if_within("tokA", "points", {}, 10, 3, 10_000)
        with lock:
            results.append("ok" if rec else reason)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count("ok") == 3 and results.count("jobs") == 17
    assert reg.usage("tokA") == (3, 30)
    assert reg.usage("tokB") == (0, 0)
    # Bytes: done jobs keep holding their bytes until deleted or expired.
    rec, reason = reg.insert_if_within("tokC", "points", {}, 600, None, 1000)
    reg.start(rec.id, 1)
    reg.finish(rec.id, [], 600, expires=1.0)
    assert reg.insert_if_within("tokC", "points", {}, 500, None, 1000) == (None, "bytes")
    assert [r.id for r in reg.expired(now=2.0)] == [rec.id]


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_scratch_writes_atomically_with_checksums(tmp_path, kind):
    url = str(tmp_path / "scratch") if kind == "local" else f"memory://scratch-{tmp_path.name}"
    s = Scratch(url)
    data = bytes(range(256)) * 1000
    entry = s.put_bytes("job1", "a/b.bin", data)
    assert entry.size == len(data) and entry.sha256 == hashlib.sha256(data).hexdigest()
    assert s.checksum("job1", "a/b.bin") == entry
    assert s.read_bytes("job1", "a/b.bin", 10, 20) == data[10:20]
    assert b"".join(s.iter_range("job1", "a/b.bin", 5, 200_000, block=7777)) == data[5:200_000]
    s.put_bytes("job1", "a/b.bin", b"new")  # replace: readers see old or new, never a mix
    assert s.read_bytes("job1", "a/b.bin") == b"new"
    s.put_bytes("job2", "c.bin", b"other")
    assert s.list("job1") == ["a/b.bin"]
    assert s.usage("job2") == 5
    with pytest.raises(InvalidInput, match="relative path"):
        s.put_bytes("job1", "../job2/c.bin", b"x")
    s.delete("job1")
    assert s.list("job1") == []
    with pytest.raises(NotFound):
        s.read_bytes("job1", "a/b.bin")
    assert s.read_bytes("job2", "c.bin") == b"other"
