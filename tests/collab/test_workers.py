"""Revocation is immediate on every worker: `labservice serve --workers 2` with Redis and PostgreSQL.

Each check is sent on fresh connections (the kernel spreads them over both workers): right after a member
is removed, a job unshared or a link revoked, no worker answers with the old access, not even once.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from labservice.db import upgrade
from labservice.devserver import ServeProcess
from labservice.tokens import TokenStore
from labservice.users import UserStore
from tests.plugin.collab import JOB_LIMITS, done_job
from tests.plugin.redis import RedisServer

ROUNDS = 12  # fresh connections per check


def _statuses(url: str, path: str, token: str | None = None) -> set[int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    seen = set()
    for _ in range(ROUNDS):
        with httpx.Client(timeout=30) as c:  # a new connection each time
            seen.add(c.get(url + path, headers=headers).status_code)
    return seen


def test_revocation_is_immediate_on_every_worker(
    sample_dir: Path, tmp_path: Path, redis_server: RedisServer, postgres_url: str
) -> None:
    upgrade(postgres_url)
    for name in ("alice", "bob"):
        UserStore(postgres_url).create(name)
    alice = TokenStore(postgres_url).create("a", JOB_LIMITS, user="alice")[1]
    bob = TokenStore(postgres_url).create("b", JOB_LIMITS, user="bob")[1]
    alice_id = alice.split("_")[1]
    scratch = str(tmp_path / "scratch")
    job = done_job(postgres_url, scratch, alice_id, b"shared across workers")
    env = {
        "LABSERVICE_DATABASE_URL": postgres_url, "LABSERVICE_REDIS_URL": redis_server.url,
        "LABSERVICE_SCRATCH_URL": scratch, "LABSERVICE_JOBS_ENABLED": "true", "LABSERVICE_ENGINE": "external",
    }  # fmt: skip
    with ServeProcess(sample_dir, env, tmp_path / "serve.log", workers=2) as served:
        served.wait_ready()
        pids: set[int] = set()
        for _ in range(60):  # bounded: until both workers answered (fresh connections spread over them)
            pids.add(httpx.get(served.url + "/livez", timeout=30).json()["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, f"one worker answered every request: {pids}\n{served.log_tail()}"
        with httpx.Client(
            base_url=served.url + "/api/v1", headers={"Authorization": f"Bearer {alice}"}, timeout=30
        ) as a:
            assert a.post("/groups", json={"name": "team"}).status_code == 201, served.log_tail()
            assert a.put("/groups/team/members/bob", json={"role": "member"}).status_code == 200
            assert a.put(f"/jobs/{job}/shares/team").status_code == 200
            assert _statuses(served.url, f"/api/v1/jobs/{job}/files/result.bin", bob) == {200}
            # removing bob: every worker refuses at once
            assert a.delete("/groups/team/members/bob").status_code == 200
            assert _statuses(served.url, f"/api/v1/jobs/{job}", bob) == {404}
            assert a.put("/groups/team/members/bob", json={"role": "member"}).status_code == 200
            assert _statuses(served.url, f"/api/v1/jobs/{job}", bob) == {200}
            # unsharing: the same
            assert a.delete(f"/jobs/{job}/shares/team").status_code == 200
            assert _statuses(served.url, f"/api/v1/jobs/{job}/files/result.bin", bob) == {404}
            # a link works without a token on every worker until revoked, then on none
            link = a.post(f"/jobs/{job}/links", json={"expires_in_hours": 1}).json()
            assert _statuses(served.url, link["path"] + "/files/result.bin") == {200}
            assert a.delete(f"/links/{link['id']}").status_code == 200
            assert _statuses(served.url, link["path"] + "/files/result.bin") == {404}
            assert _statuses(served.url, link["path"]) == {404}
            # odd bytes never reach PostgreSQL as text it refuses: clear 4xx, never a 5xx
            for method, path, body in [
                ("GET", "/groups/a%00b", None), ("PUT", "/groups/team/members/b%00b", {"role": "member"}),
                ("GET", "/jobs/a%00b", None), ("DELETE", "/links/a%00b", None), ("GET", "/links/a%00b/x", None),
                ("DELETE", "/me/tokens/a%00b", None), ("POST", "/groups", {"name": "ok", "description": "a\x00b"}),
                ("POST", "/me/tokens", {"name": "a\x00b"}),
            ]:  # fmt: skip
                r = a.request(method, path, json=body)
                assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
