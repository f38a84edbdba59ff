"""Users: /me, one's own tokens through the API, scopes (403 naming the missing one), expiry, the CLI and
the migration that turns each existing token into the only token of a user named after it."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from labservice.db import database, upgrade
from labservice.db.legacy import LEGACY_TOKENS_DDL
from labservice.db.migrate import _config
from labservice.errors import Unauthorized
from labservice.limits import Limits
from labservice.tokens import TokenStore


def test_me_shows_user_groups_limits_and_usage(collab) -> None:
    alice, bob = collab.person("alice"), collab.person("bob")
    if alice.get("/groups/meg").status_code == 404:
        assert alice.post("/groups", json={"name": "meg"}).status_code == 201
    alice.put("/groups/meg/members/bob", json={"role": "admin"})
    job = collab.job(alice, b"x" * 1000)
    alice.post(f"/jobs/{job}/links", json={"expires_in_hours": 1})
    me = alice.get("/me").json()
    assert me["user"] == "alice" and me["admin"] is False
    assert {"name": "meg", "role": "owner"} in me["groups"]
    assert me["token"]["scopes"] == ["jobs", "mydb", "read", "share"]
    assert (
        me["limits"]["mydb_mb"] == 1024 and me["limits"]["max_links"] == 100 and me["limits"]["jobs_allowed"]
    )
    assert me["usage"]["scratch_bytes"] >= 1000 and me["usage"]["links"] >= 1
    assert me["usage"]["running_jobs"] == 0 and me["usage"]["mydb_bytes"] == 0
    assert {"name": "meg", "role": "admin"} in bob.get("/me").json()["groups"]


def test_own_tokens_list_create_revoke(collab) -> None:
    fred = collab.person("fred", max_tokens=3)
    listed = fred.get("/me/tokens").json()["tokens"]
    assert [t["current"] for t in listed] == [True] and "hash" not in listed[0] and "token" not in listed[0]
    r = fred.post("/me/tokens", json={"name": "laptop", "scopes": ["read"], "expires_in_hours": 1,
                                      "limits": {"points_per_request": 10}})  # fmt: skip
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["token"].startswith("lab_") and new["scopes"] == "read" and new["user"] == "fred"
    with httpx.Client(
        base_url=collab.url + "/api/v1", headers={"Authorization": f"Bearer {new['token']}"}
    ) as lap:
        me = lap.get("/me").json()
        assert (
            me["user"] == "fred"
            and me["token"]["scopes"] == ["read"]
            and me["limits"]["points_per_request"] == 10
        )
        # a read-only token: GETs work; jobs, sharing and mydb are 403 naming the scope
        r = lap.post("/jobs", json={"kind": "points"})
        assert r.status_code == 403 and "'jobs' scope" in r.json()["detail"]
        r = lap.post("/groups", json={"name": "x"})
        assert r.status_code == 403 and "'share' scope" in r.json()["detail"]
        r = lap.get("/mydb/tables")
        assert r.status_code == 403 and "'mydb' scope" in r.json()["detail"]
        # it cannot grant itself more
        r = lap.post("/me/tokens", json={"name": "more", "scopes": ["read", "jobs"]})
        assert r.status_code == 403 and "cannot grant" in r.json()["detail"]
        r = lap.post("/me/tokens", json={"name": "more", "limits": {"points_per_request": 11}})
        assert r.status_code == 422 and "from 0 to yours (10)" in r.json()["detail"]
        child = lap.post("/me/tokens", json={"name": "child", "expires_in_hours": 100}).json()
        assert child["expires"] <= new["expires"] + 1  # never outlives the token that made it
    # the tokens quota (3 alive: fred's, laptop, child)
    r = fred.post("/me/tokens", json={"name": "fourth"})
    assert r.status_code == 409 and "your limit is 3" in r.json()["detail"]
    assert fred.delete(f"/me/tokens/{new['id']}").status_code == 200
    assert fred.delete(f"/me/tokens/{new['id']}").status_code == 200  # idempotent
    other = collab.person("alice").token_id
    assert fred.delete(f"/me/tokens/{other}").status_code == 404  # not fred's: like an unknown id
    time.sleep(0.6)  # the token cache holds a verification 0.5 s at most
    with httpx.Client(
        base_url=collab.url + "/api/v1", headers={"Authorization": f"Bearer {new['token']}"}
    ) as lap:
        assert lap.get("/me").status_code == 401
    for bad in [{"name": ""}, {"name": "x", "scopes": "read,fly"}, {"name": "x", "expires_in_hours": -1},
                {"name": "x", "limits": {"nope": 1}}, {"name": "x", "limits": {"jobs_allowed": 3}}, {}]:  # fmt: skip
        r = fred.post("/me/tokens", json=bad)
        assert 400 <= r.status_code < 500, (bad, r.text)


def test_each_scope_gates_its_routes(collab) -> None:
    gina = collab.person("gina")
    job = collab.job(gina)
    scoped = {s: collab.person("gina", scopes=s) for s in ("read", "jobs", "share")}
    expect = [  # (method, path, body, the scope it needs)
        ("GET", "/datasets", None, "read"),
        ("GET", "/jobs", None, "read"),
        ("GET", f"/jobs/{job}", None, "read"),
        ("DELETE", "/jobs/nope", None, "jobs"),
        ("PUT", f"/jobs/{job}/shares/nope", None, "share"),
        ("POST", f"/jobs/{job}/links", {"expires_in_hours": 1}, "share"),
        ("GET", "/links", None, "share"),
        ("POST", "/groups", {"name": "Bad"}, "share"),
    ]
    for method, path, body, scope in expect:
        for have, person in scoped.items():
            r = person.request(method, path, json=body)
            if have == scope:
                assert r.status_code != 403 or "scope" not in r.text, (method, path, have, r.text)
            else:
                assert r.status_code == 403 and f"'{scope}' scope" in r.json()["detail"], (
                    method,
                    path,
                    have,
                    r.text,
                )


def test_an_expired_token_stops(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.sqlite")
    _, token = store.create("short", Limits(), expires=time.time() + 0.5)
    assert store.verify(token).user == "short"
    time.sleep(0.6)
    with pytest.raises(Unauthorized, match="expired"):
        store.verify(token)
    with pytest.raises(Exception, match="future"):
        store.create("past", Limits(), expires=time.time() - 1)


def test_migration_makes_each_old_token_a_user(tmp_path: Path) -> None:
    """A database at revision 0002 with tokens (two of the same name) upgrades: each token is its user's only one."""
    from alembic import command

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(LEGACY_TOKENS_DDL)
        for tid, name, secret in [
            ("aaa111", "Alice Smith", "s1"),
            ("bbb222", "Alice Smith", "s2"),
            ("ccc333", "mydb", "s3"),
        ]:
            db.execute("INSERT INTO tokens VALUES (?, ?, ?, 1.7e9, 0, ?)",
                       (tid, name, hashlib.sha256(secret.encode()).hexdigest(), json.dumps({"jobs_allowed": True})))  # fmt: skip
    db = database(path)
    with db.connect(write=True) as conn:  # bring it to 0002 only, as the previous release left it
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    done = upgrade(path)
    assert done["migrated"] and done["revision"] == "0004"
    store = TokenStore(path)
    users = {r.id: r.user for r in store.list()}
    assert users == {"aaa111": "alice_smith", "bbb222": "alice_smith_bbb222", "ccc333": "mydb_ccc333"}
    caller = store.verify("lab_aaa111_s1")
    assert caller.user == "alice_smith" and caller.scopes == {"read", "jobs", "mydb", "share"}
    assert caller.limits.jobs_allowed
    with db.connect() as conn:
        per_user = conn.execute(sa.text("SELECT user_id, count(*) FROM tokens GROUP BY user_id")).all()
    assert len(per_user) == 3 and all(n == 1 for _, n in per_user)


def test_cli_user_and_token_commands(tmp_path: Path) -> None:
    env = {**os.environ, "LABSERVICE_TOKEN_DB": str(tmp_path / "t.sqlite")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "labservice", *args], env=env, capture_output=True, text=True, timeout=120
        )

    assert run("user", "create", "hana", "--admin", "--mydb-mb", "7").returncode == 0
    dup = run("user", "create", "hana")
    assert dup.returncode == 2 and "exists already" in dup.stderr
    assert "not valid" in run("user", "create", "Hana!").stderr
    made = run(
        "token", "create", "--name", "laptop", "--user", "hana", "--scopes", "read,mydb", "--expires", "2"
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    caller = TokenStore(tmp_path / "t.sqlite").verify(token)
    assert caller.user == "hana" and caller.admin and caller.scopes == {"read", "mydb"}
    assert (
        "create one with `labservice user create nobody`"
        in run("token", "create", "--name", "x", "--user", "nobody").stderr
    )
    assert "unknown scope" in run("token", "create", "--name", "x", "--scopes", "read,fly").stderr
    assert "user=hana" in run("token", "list").stdout
    assert "mydb=7MiB" in run("user", "list").stdout
    assert "3 links" in run("user", "limits", "hana", "--max-links", "3").stdout


def test_tokens_imported_from_an_old_file_become_users(tmp_path: Path) -> None:
    """`labservice db upgrade` importing an old tokens.sqlite after the migration: each token gets its user."""
    old = tmp_path / "tokens.sqlite"
    with sqlite3.connect(old) as db:
        db.execute(LEGACY_TOKENS_DDL)
        db.execute(
            "INSERT INTO tokens VALUES ('ddd444', 'Old Carol', ?, 1.7e9, 0, '{}')",
            (hashlib.sha256(b"s4").hexdigest(),),
        )
    url = tmp_path / "labservice.sqlite"
    done = upgrade(url, legacy_tokens=old)
    assert done["imported"] == {"tokens": 1}
    assert [r.user for r in TokenStore(url).list()] == ["old_carol"]
    assert TokenStore(url).verify("lab_ddd444_s4").user == "old_carol"
