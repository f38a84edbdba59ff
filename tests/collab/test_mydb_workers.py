"""MyDB on `labservice serve --workers 2` with Redis and PostgreSQL: a table saved through one worker is read
through every worker; unsharing holds at once on every worker (REST and SQL); concurrent saves never pass
the quota (the quota row is locked in PostgreSQL)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from labservice.db import upgrade
from labservice.devserver import ServeProcess
from labservice.users import UserStore
from tests.plugin.mydb import data_folder, make_people, ok
from tests.plugin.redis import RedisServer

ROUNDS = 12  # fresh connections per check (the kernel spreads them over both workers)


def _statuses(url: str, method: str, path: str, token: str, body: dict | None = None) -> set[int]:
    seen = set()
    for _ in range(ROUNDS):
        with httpx.Client(timeout=30) as c:  # a new connection each time
            seen.add(
                c.request(
                    method, url + path, json=body, headers={"Authorization": f"Bearer {token}"}
                ).status_code
            )
    return seen


def _parquet(n: int, seed: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"v": np.random.default_rng(seed).random(n)}), buf, compression="none")
    return buf.getvalue()


def test_unsharing_is_immediate_on_every_worker_and_quotas_hold(
    demo_data: Path, tmp_path: Path, redis_server: RedisServer, postgres_url: str
) -> None:
    upgrade(postgres_url)
    people = make_people(postgres_url, "http://unused", ("alice", "bob", "carol"), mydb_mb={"carol": 1})
    env = {
        "LABSERVICE_DATABASE_URL": postgres_url, "LABSERVICE_REDIS_URL": redis_server.url,
        "LABSERVICE_USER_STORE_URL": str(tmp_path / "store"), "LABSERVICE_JOBS_ENABLED": "false",
    }  # fmt: skip
    data = data_folder(demo_data, tmp_path / "data")
    with ServeProcess(data, env, tmp_path / "serve.log", workers=2) as served:
        served.wait_ready()
        pids: set[int] = set()
        for _ in range(60):  # bounded: until both workers answered
            pids.add(httpx.get(served.url + "/livez", timeout=30).json()["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, f"one worker answered every request: {pids}\n{served.log_tail()}"
        api = served.url + "/api/v1"
        alice, bob, carol = (people[n].token for n in ("alice", "bob", "carol"))
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {alice}"}, timeout=60) as a:
            ok(a.post("/datasets/cosmo64/sql", json={"sql": "SELECT id, mass FROM halos WHERE snap = 30 LIMIT 20",
                                                     "into": "picked"}), 201)  # fmt: skip
            ok(a.post("/groups", json={"name": "team"}), 201)
            ok(a.put("/groups/team/members/bob", json={"role": "member"}))
            assert _statuses(api, "GET", "/mydb/tables/alice.picked", bob) == {404}
            ok(a.put("/mydb/tables/picked/shares/team"))
            sql = {"sql": "SELECT count(*) AS n FROM alice.picked"}
            assert _statuses(api, "GET", "/mydb/tables/alice.picked?format=csv", bob) == {200}
            assert _statuses(api, "POST", "/mydb/sql", bob, sql) == {200}
            ok(a.delete("/mydb/tables/picked/shares/team"))
            assert _statuses(api, "GET", "/mydb/tables/alice.picked?format=csv", bob) == {404}
            assert _statuses(api, "POST", "/mydb/sql", bob, sql) == {422}
            assert _statuses(api, "GET", "/mydb/tables/picked", alice) == {200}
        # six concurrent saves of ~240 kB into 1 MiB: at most four fit, the others are 413, usage stays under
        body = _parquet(30_000, 1)

        def save(i: int) -> int:
            with httpx.Client(timeout=60) as c:
                return c.put(
                    f"{api}/mydb/tables/part{i}",
                    content=body,
                    headers={
                        "Authorization": f"Bearer {carol}",
                        "Content-Type": "application/vnd.apache.parquet",
                    },
                ).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(save, range(6)))
        assert set(statuses) <= {201, 413} and statuses.count(413) >= 2, statuses
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {carol}"}, timeout=60) as c:
            usage = ok(c.get("/mydb/tables"))["usage"]
        assert (
            usage["tables"] == statuses.count(201) and usage["used_bytes"] <= usage["quota_bytes"] == 1 << 20
        )
        assert (
            len(list((tmp_path / "store").rglob("*.parquet"))) == 1 + usage["tables"]
        )  # refused files removed
    assert UserStore(postgres_url).get("carol").limits.mydb_mb == 1
