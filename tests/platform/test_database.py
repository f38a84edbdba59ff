"""The platform database: tokens, jobs, quotas and leases behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import sqlalchemy as sa

import labservice.db
from labservice.db.connect import normalize_url
from labservice.errors import InvalidInput, NotFound, Unauthorized
from labservice.jobs.registry import JobRegistry
from labservice.limits import Limits
from labservice.tokens import CACHE_SECONDS, TokenStore


def test_urls_users_write_are_accepted() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg2://u:pw@h:5433/db") == "postgresql+psycopg://u:pw@h:5433/db"
    assert normalize_url("sqlite:////tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"
    assert normalize_url("/tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"
    with pytest.raises(InvalidInput, match="sqlite:/// or postgresql://"):
        normalize_url("mysql://u@h/db")


def test_upgrade_creates_the_schema_once(db_url: str) -> None:
    db = labservice.db.database(db_url)
    tables = set(sa.inspect(db.engine).get_table_names())
    assert {"tokens", "jobs", "quotas", "legacy_imports", "alembic_version"} <= tables
    columns = {c["name"] for c in sa.inspect(db.engine).get_columns("jobs")}
    assert {"engine_id", "lease_expires", "cancel_requested", "attempts"} <= columns
    db.upgraded = False  # as a new process would see it
    again = labservice.db.upgrade(db_url)
    assert again["migrated"] is False and again["revision"] == labservice.db.head()


def test_tokens_create_verify_list_revoke(db_url: str) -> None:
    store = TokenStore(db_url)
    record, token = store.create("alice", Limits(points_per_request=123))
    caller = store.verify(token)
    assert (caller.token_id, caller.name, caller.limits.points_per_request) == (record.id, "alice", 123)
    assert [r.id for r in store.list()] == [record.id]
    for bad in (token[:-1] + ("a" if token[-1] != "a" else "b"), "lab_nothere_x", "nonsense"):
        with pytest.raises(Unauthorized):
            store.verify(bad)
    with pytest.raises(NotFound):
        store.revoke("nothere")
    store.revoke(record.id)
    with pytest.raises(Unauthorized):
        store.verify(token)
    assert store.list()[0].revoked


def test_revocation_reaches_another_store_within_a_second(db_url: str) -> None:
    """Two stores stand for two processes: each caches verifications, for CACHE_SECONDS at most."""
    here, there = TokenStore(db_url), TokenStore(db_url)
    there._cache.clear()
    record, token = here.create("bob", Limits())
    assert there.verify(token).name == "bob"  # cached in `there` now
    here.revoke(record.id)
    revoked_at = time.monotonic()
    refused_after = None
    while time.monotonic() - revoked_at < 2.0:
        try:
            there.verify(token)
        except Unauthorized:
            refused_after = time.monotonic() - revoked_at
            break
        time.sleep(0.02)
    assert CACHE_SECONDS <= 0.5
    assert refused_after is not None and refused_after < 1.0, refused_after


def test_registry_lifecycle(db_url: str) -> None:
    reg = JobRegistry(db_url)
    rec, reason = reg.insert_if_within("tokA", "cutout", {"dataset": "d", "n": [1, 2]}, 100, 2, 1000)
    assert reason == "" and rec.status == "queued"
    assert reg.start(rec.id, total=4)
    reg.progress(rec.id, 3)
    got = reg.get(rec.id)
    assert (got.status, got.done, got.total, got.progress, got.attempts) == ("running", 3, 4, 0.75, 1)
    assert got.params == {"dataset": "d", "n": [1, 2]}
    assert reg.finish(rec.id, [{"name": "x", "size": 1, "sha256": "0"}], 60, expires=5.0)
    done = reg.get(rec.id)
    assert (done.status, done.done, done.nbytes, done.files[0]["name"]) == ("done", 4, 60, "x")
    assert not reg.end(rec.id, "cancelled", "too late")  # only active jobs can be cancelled
    assert [r.id for r in reg.expired(now=6.0)] == [rec.id] and reg.expired(now=4.0) == []
    assert reg.end(rec.id, "expired", None, from_statuses=("done",))
    assert reg.get(rec.id).nbytes == 0 and reg.get("nothere") is None
    other, _ = reg.insert_if_within("tokB", "points", {}, 1, None, None)
    assert [r.id for r in reg.list()] == [other.id, rec.id]  # newest first
    assert [r.id for r in reg.list(owner="tokA")] == [rec.id]
    assert [r.id for r in reg.list(statuses=("queued",))] == [other.id]
    assert reg.end(other.id, "failed", "boom") and reg.get(other.id).error == "boom"


def test_quota_check_is_atomic_across_threads(db_url: str) -> None:
    reg = JobRegistry(db_url)
    results: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        rec, reason = reg.insert_if_within("tokA", "points", {}, 10, 3, 10_000)
        with lock:
            results.append("ok" if rec else reason)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count("ok") == 3 and results.count("jobs") == 17
    assert reg.usage("tokA") == (3, 30)
    # Bytes: a done job keeps holding its bytes.
    rec, _ = reg.insert_if_within("tokC", "points", {}, 600, None, 1000)
    reg.start(rec.id, 1)
    reg.finish(rec.id, [], 600, expires=1.0)
    assert reg.insert_if_within("tokC", "points", {}, 500, None, 1000) == (None, "bytes")


def _submit_many(
    url: str, n: int, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue
) -> None:
    reg = JobRegistry(url)
    start.wait(30)
    ok = 0
    for _ in range(n):
        rec, _reason = reg.insert_if_within("shared", "points", {}, 1, 5, None)
        ok += rec is not None
    out.put(ok)


def test_quota_check_is_atomic_across_processes(db_url: str) -> None:
    """Four processes, each with its own pool, submit at once: exactly max_active get in."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_submit_many, args=(db_url, 10, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let them import and connect, so the inserts overlap
    start.set()
    accepted = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert accepted == 5 and JobRegistry(db_url).usage("shared") == (5, 5)


def test_leases_claim_heartbeat_takeover(db_url: str) -> None:
    reg = JobRegistry(db_url)
    a, _ = reg.insert_if_within("o", "points", {}, 1, None, None)
    b, _ = reg.insert_if_within("o", "points", {}, 1, None, None)
    assert reg.claim(a.id, "e1", ttl=30)
    assert reg.claim(a.id, "e1", ttl=30)  # our own lease: renewed
    assert not reg.claim(a.id, "e2", ttl=30)  # a live lease of another engine
    assert reg.start(a.id, total=2) and reg.get(a.id).attempts == 1
    # e2 takes what is free: b, not a.
    assert [r.id for r in reg.claim_next("e2", ttl=30)] == [b.id]
    assert reg.claim_next("e3", ttl=30) == []
    assert reg.heartbeat("e1", [a.id, b.id], ttl=30) == {a.id}
    assert {r.id for r in reg.owned("e2")} == {b.id}
    # e1 dies: its lease runs out and e3 takes the job over; the next run counts a second attempt.
    assert reg.heartbeat("e1", [a.id], ttl=-1) == {a.id}  # lease now in the past
    taken = reg.claim_next("e3", ttl=30)
    assert [r.id for r in taken] == [a.id] and taken[0].engine_id == "e3"
    assert reg.get(a.id).attempts == 1  # a claim alone does not count an attempt
    assert reg.start(a.id, total=2) and reg.get(a.id).attempts == 2
    assert reg.heartbeat("e1", [a.id], ttl=30) == set()  # e1 learns it lost the job
    # Released leases are free at once; a final job is no longer claimable.
    reg.release(b.id, "e2")
    assert reg.get(b.id).engine_id is None and reg.claim(b.id, "e3", ttl=30)
    assert reg.end(b.id, "failed", "x")
    assert not reg.claim(b.id, "e1", ttl=30) and reg.heartbeat("e3", [b.id], ttl=30) == set()


def test_cancel_requests(db_url: str) -> None:
    reg = JobRegistry(db_url)
    a, _ = reg.insert_if_within("o", "points", {}, 1, None, None)
    b, _ = reg.insert_if_within("o", "points", {}, 1, None, None)
    assert reg.claim(a.id, "e1", 30) and reg.cancel_requested([a.id, b.id]) == set()
    assert reg.request_cancel(a.id) and reg.get(a.id).cancel_requested
    assert reg.end(a.id, "cancelled", "by owner")
    # Still flagged for the engine after the status change, until the engine releases the job.
    assert reg.cancel_requested([a.id, b.id]) == {a.id}
    assert not reg.request_cancel(a.id) and not reg.request_cancel("nothere")  # not active
    reg.release(a.id, "e1")
    assert reg.cancel_requested([a.id]) == set() and reg.cancel_requested([]) == set()


def _upgrade(url: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:
    start.wait(30)
    out.put(labservice.db.upgrade(url)["migrated"])


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_workers_starting_together_migrate_once(kind: str, tmp_path, request: pytest.FixtureRequest) -> None:
    """N server processes start on an empty database at once: one migrates, the others find it done."""
    url = (
        f"sqlite:///{tmp_path / 'new.sqlite'}"
        if kind == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_upgrade, args=(url, start, out)) for _ in range(3)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    start.set()
    migrated = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(migrated) == [False, False, True]
    reg = JobRegistry(url)
    assert reg.insert_if_within("o", "points", {}, 1, None, None)[0] is not None


def test_a_server_refuses_an_unmigrated_postgresql(postgres_url: str) -> None:
    """A server process never migrates PostgreSQL itself; it says which command to run."""
    from labservice.errors import LabError
    from labservice.settings import Settings

    with pytest.raises(LabError, match="labservice db upgrade"):
        labservice.db.prepare(Settings(database_url=postgres_url), with_jobs=False)
    labservice.db.upgrade(postgres_url)
    labservice.db.prepare(Settings(database_url=postgres_url), with_jobs=True)  # now it starts


def test_cached_verification_needs_no_database(db_url: str) -> None:
    store = TokenStore(db_url)
    _, token = store.create("dora", Limits())
    assert store.cached(token) is None
    assert store.verify(token).name == "dora" and store.cached(token).name == "dora"
    time.sleep(CACHE_SECONDS + 0.05)
    assert store.cached(token) is None  # expired: the next request asks the database again


def test_count_by_status_and_ping(db_url: str) -> None:
    reg = JobRegistry(db_url)
    a, _ = reg.insert_if_within("o", "points", {}, 1, None, None)
    reg.insert_if_within("o", "points", {}, 1, None, None)
    reg.end(a.id, "failed", "x")
    counts = reg.count_by_status()
    assert (
        counts["queued"] == 1 and counts["failed"] == 1 and counts["done"] == 0 and sum(counts.values()) == 2
    )
    labservice.db.database(db_url).ping()
