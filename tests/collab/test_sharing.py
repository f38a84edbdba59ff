"""Job shares and links over HTTP: read-only for members, gone at once, links without a token, quotas."""

from __future__ import annotations

import hashlib
import time

import httpx
import sqlalchemy as sa

from labservice.db import database
from labservice.db.schema import links as L


def _group(owner, name: str, *members) -> None:
    if owner.get(f"/groups/{name}").status_code == 404:
        assert owner.post("/groups", json={"name": name}).status_code == 201
    for m in members:
        assert owner.put(f"/groups/{name}/members/{m.name}", json={"role": "member"}).status_code == 200


def test_a_shared_job_is_read_only_for_members_and_gone_at_once(collab) -> None:
    alice, bob, carol = collab.person("alice"), collab.person("bob"), collab.person("carol")
    _group(alice, "share1", bob)
    job = collab.job(alice, b"alice's numbers")
    assert bob.get(f"/jobs/{job}").status_code == 404  # not shared yet: like an unknown id
    r = alice.put(f"/jobs/{job}/shares/share1")
    assert r.status_code == 200 and r.json()["shared_with"] == ["share1"]
    assert alice.put(f"/jobs/{job}/shares/share1").json()["shared_with"] == ["share1"]  # idempotent
    # bob reads and downloads; sees it only with ?shared=true; cannot change it
    body = bob.get(f"/jobs/{job}").json()
    assert body["shared"] is True and body["owner"] == "alice" and body["shared_through"] == ["share1"]
    assert bob.get(f"/jobs/{job}/files/result.bin").content == b"alice's numbers"
    assert bob.get(f"/jobs/{job}/files/result.bin", headers={"Range": "bytes=0-4"}).content == b"alice"
    assert job not in {j["id"] for j in bob.get("/jobs").json()["jobs"]}
    listed = {j["id"]: j for j in bob.get("/jobs", params={"shared": "true"}).json()["jobs"]}
    assert listed[job]["shared"] is True
    for method, path in [("DELETE", f"/jobs/{job}"), ("PUT", f"/jobs/{job}/shares/share1"),
                         ("DELETE", f"/jobs/{job}/shares/share1"), ("POST", f"/jobs/{job}/links")]:  # fmt: skip
        r = bob.request(method, path, json={"expires_in_hours": 1} if method == "POST" else None)
        assert r.status_code == 403 and "read-only" in r.json()["detail"], (method, path, r.text)
    assert carol.get(f"/jobs/{job}").status_code == 404  # not in the group
    assert carol.get(f"/jobs/{job}/files/result.bin").status_code == 404
    # removing bob from the group takes it away at once; adding him back gives it back
    assert alice.delete("/groups/share1/members/bob").status_code == 200
    assert bob.get(f"/jobs/{job}").status_code == 404
    assert bob.get(f"/jobs/{job}/files/result.bin").status_code == 404
    _group(alice, "share1", bob)
    assert bob.get(f"/jobs/{job}").status_code == 200
    # unsharing takes it away at once
    assert alice.delete(f"/jobs/{job}/shares/share1").json()["shared_with"] == []
    assert bob.get(f"/jobs/{job}").status_code == 404
    assert job not in {j["id"] for j in bob.get("/jobs", params={"shared": "true"}).json()["jobs"]}
    assert alice.get(f"/jobs/{job}").status_code == 200  # the owner still has it


def test_share_bad_input_is_a_clear_4xx(collab) -> None:
    alice, bob = collab.person("alice"), collab.person("bob")
    _group(bob, "bobs")
    job = collab.job(alice)
    cases = [
        ("PUT", f"/jobs/{job}/shares/bobs", 404, "no group 'bobs' among your groups"),  # not a member
        ("PUT", f"/jobs/{job}/shares/Bad!", 422, "not valid"),
        ("PUT", "/jobs/nope/shares/bobs", 404, "no job"),
        ("DELETE", f"/jobs/{job}/shares/bobs", 404, "not shared"),
        ("GET", "/jobs?shared=maybe", 422, "shared"),
    ]
    for method, path, status, words in cases:
        r = alice.request(method, path)
        assert r.status_code == status and words in r.text, (method, path, r.text)
    assert bob.put(f"/jobs/{job}/shares/bobs").status_code == 404  # someone else's job


def test_a_link_downloads_without_a_token_until_revoked(collab) -> None:
    alice, bob = collab.person("alice"), collab.person("bob")
    job = collab.job(alice, b"linked data")
    r = alice.post(f"/jobs/{job}/links", json={"expires_in_hours": 2})
    assert r.status_code == 201, r.text
    link = r.json()
    assert link["url"].startswith(collab.url) and link["expires"] > time.time() + 7000
    secret = link["path"].rsplit("/", 1)[1]
    assert len(secret) >= 40  # 32 random bytes
    with collab.public() as anon:
        listing = httpx.get(link["url"], timeout=30).json()
        assert listing["job"] == job and [f["name"] for f in listing["files"]] == ["result.bin"]
        got = httpx.get(collab.url + listing["files"][0]["url"], timeout=30)
        assert got.status_code == 200 and got.content == b"linked data"
        part = httpx.get(collab.url + listing["files"][0]["url"], headers={"Range": "bytes=7-"}, timeout=30)
        assert part.status_code == 206 and part.content == b"data"
        # a wrong secret or id is a 404 that says what happened
        assert anon.get(f"/links/{link['id']}/{'x' * 43}").status_code == 404
        assert anon.get(f"/links/nope/{secret}/files/result.bin").status_code == 404
        assert anon.get(f"/links/{link['id']}/{secret}/files/other.bin").status_code == 404
    # only a hash of the secret is stored
    with database(collab.db).connect() as conn:
        stored = conn.execute(sa.select(L.c.hash).where(L.c.id == link["id"])).scalar_one()
    assert stored == hashlib.sha256(secret.encode()).hexdigest() and secret not in stored
    assert [x["id"] for x in alice.get("/links").json()["links"] if x["active"]].count(link["id"]) == 1
    assert bob.delete(f"/links/{link['id']}").status_code == 404  # not bob's
    assert alice.delete(f"/links/{link['id']}").status_code == 200
    assert httpx.get(link["url"], timeout=30).status_code == 404
    assert "revoked" in httpx.get(link["url"], timeout=30).json()["detail"]


def test_a_link_expires(collab) -> None:
    alice = collab.person("alice")
    job = collab.job(alice)
    link = alice.post(f"/jobs/{job}/links", json={"expires_in_hours": 0.0003}).json()  # ~1 s
    assert httpx.get(link["url"], timeout=30).status_code == 200
    deadline = time.monotonic() + 10
    while httpx.get(link["url"], timeout=30).status_code == 200:  # bounded: 10 s
        assert time.monotonic() < deadline, "the link outlived its expiry"
        time.sleep(0.2)
    assert httpx.get(link["url"] + "/files/result.bin", timeout=30).status_code == 404


def test_link_quota_and_bad_input(collab) -> None:
    erin = collab.person("erin", max_links=2)
    job = collab.job(erin)
    made = [erin.post(f"/jobs/{job}/links", json={"expires_in_hours": 1}) for _ in range(2)]
    assert all(r.status_code == 201 for r in made)
    r = erin.post(f"/jobs/{job}/links", json={"expires_in_hours": 1})
    assert r.status_code == 409 and "your limit is 2" in r.json()["detail"]
    assert erin.delete(f"/links/{made[0].json()['id']}").status_code == 200  # revoking frees a slot
    assert erin.post(f"/jobs/{job}/links", json={"expires_in_hours": 1}).status_code == 201
    for bad in [{"expires_in_hours": 0}, {"expires_in_hours": -1}, {"expires_in_hours": 10**9},
                {"expires_in_hours": "soon"}, {"hours": 1}]:  # fmt: skip
        r = erin.post(f"/jobs/{job}/links", json=bad)
        assert r.status_code == 422, (bad, r.text)
    assert erin.post("/jobs/nope/links", json={"expires_in_hours": 1}).status_code == 404
    assert erin.delete("/links/nope").status_code == 404
