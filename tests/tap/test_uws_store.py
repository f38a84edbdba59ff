"""The pending UWS jobs live in the platform database: on PostgreSQL, two hosts' stores see one job and only
one PHASE=RUN claims it; on SQLite the store is the registry's own file."""

from __future__ import annotations

import pytest

from labservice.datasets.tap.uws import UwsStore
from labservice.db import database, migrate
from labservice.errors import NotFound


def _two_hosts(url: str) -> tuple[UwsStore, UwsStore]:
    migrate(database(url))  # `labservice db upgrade`
    return UwsStore(url), UwsStore(url)


def _check(a: UwsStore, b: UwsStore) -> None:
    job = a.create("tok1", {"QUERY": "SELECT 1", "LANG": "ADQL"}, duration=60, ttl=3600)
    seen = b.get("tok1", job.id)
    assert (seen.params, seen.job, seen.aborted, seen.error) == ({"QUERY": "SELECT 1", "LANG": "ADQL"}, None, False, None)
    with pytest.raises(NotFound, match="among your jobs"):
        b.get("tok2", job.id)
    later = b.create("tok1", {"QUERY": "SELECT 2"}, duration=60, ttl=3600)
    assert [j.id for j in a.list("tok1")] == [later.id, job.id] and a.list("tok2") == []
    assert [a.claim_run(job.id), b.claim_run(job.id)] == [True, False]
    a.update(job.id, job="engine-job-1", params={"QUERY": "SELECT 3"})
    again = b.get("tok1", job.id)
    assert again.job == "engine-job-1" and again.params == {"QUERY": "SELECT 3"}
    b.update(later.id, deleted=1)
    with pytest.raises(NotFound):
        a.get("tok1", later.id)
    assert [j.id for j in a.list("tok1")] == [job.id]


def test_on_postgresql_two_hosts_share_pending_jobs(postgres_url: str) -> None:
    _check(*_two_hosts(postgres_url))


def test_on_sqlite_the_registry_file_holds_them(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'labservice.sqlite'}"
    _check(UwsStore(url), UwsStore(url))
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".sqlite") == ["labservice.sqlite"]
