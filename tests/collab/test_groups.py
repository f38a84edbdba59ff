"""Groups over HTTP: every route, the role rules (SciServer's owner/admin/member) and bad input as 4xx."""

from __future__ import annotations

import pytest


def test_create_list_get_and_the_creator_is_owner(collab) -> None:
    alice = collab.person("alice")
    r = alice.post("/groups", json={"name": "turb", "description": "channel flow"})
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "owner" and r.json()["members"] == [{"user": "alice", "role": "owner"}]
    assert {"name": "turb", "role": "owner"}.items() <= alice.get("/groups").json()["groups"][0].items()
    g = alice.get("/groups/turb").json()
    assert g["description"] == "channel flow"
    again = alice.post("/groups", json={"name": "turb"})
    assert again.status_code == 409 and "exists already" in again.json()["detail"]


def test_role_rules(collab) -> None:
    alice, bob, carol, dave = (collab.person(n) for n in ("alice", "bob", "carol", "dave"))
    assert alice.post("/groups", json={"name": "roles"}).status_code == 201
    # a non-member sees nothing: 404 like a group that does not exist
    assert bob.get("/groups/roles").status_code == 404
    assert bob.put("/groups/roles/members/carol", json={"role": "member"}).status_code == 404
    # the owner adds; a member cannot add
    assert alice.put("/groups/roles/members/bob").json()["members"][1] == {
        "user": "bob",
        "role": "member",
    }  # no body
    r = bob.put("/groups/roles/members/carol", json={"role": "member"})
    assert r.status_code == 403 and "owners and admins" in r.json()["detail"]
    # an admin adds members and admins, re-roles members, but cannot make or touch owners
    assert alice.put("/groups/roles/members/carol", json={"role": "admin"}).status_code == 200
    assert carol.put("/groups/roles/members/dave", json={"role": "member"}).status_code == 200
    assert carol.put("/groups/roles/members/bob", json={"role": "admin"}).status_code == 200
    assert carol.put("/groups/roles/members/bob", json={"role": "member"}).status_code == 200
    r = carol.put("/groups/roles/members/dave", json={"role": "owner"})
    assert r.status_code == 403 and "cannot make owners" in r.json()["detail"]
    assert carol.put("/groups/roles/members/alice", json={"role": "member"}).status_code == 403
    assert carol.delete("/groups/roles/members/alice").status_code == 403
    # members only leave; admins remove members
    r = bob.delete("/groups/roles/members/dave")
    assert r.status_code == 403 and "only leave" in r.json()["detail"]
    assert carol.delete("/groups/roles/members/dave").status_code == 200
    assert bob.delete("/groups/roles/members/bob").status_code == 200  # leaving
    assert bob.get("/groups/roles").status_code == 404
    # the last owner cannot leave or be demoted; with a second owner they can
    r = alice.delete("/groups/roles/members/alice")
    assert r.status_code == 409 and "last owner" in r.json()["detail"]
    r = alice.put("/groups/roles/members/alice", json={"role": "member"})
    assert r.status_code == 409 and "last owner" in r.json()["detail"]
    assert alice.put("/groups/roles/members/carol", json={"role": "owner"}).status_code == 200
    assert alice.delete("/groups/roles/members/alice").status_code == 200
    assert [m["user"] for m in carol.get("/groups/roles").json()["members"]] == ["carol"]


def test_only_an_owner_deletes_and_shares_go_with_the_group(collab) -> None:
    alice, bob = collab.person("alice"), collab.person("bob")
    assert alice.post("/groups", json={"name": "gone"}).status_code == 201
    assert alice.put("/groups/gone/members/bob", json={"role": "admin"}).status_code == 200
    job = collab.job(alice)
    assert alice.put(f"/jobs/{job}/shares/gone").status_code == 200
    assert bob.get(f"/jobs/{job}").status_code == 200
    r = bob.delete("/groups/gone")
    assert r.status_code == 403 and "only an owner" in r.json()["detail"]
    assert alice.delete("/groups/gone").status_code == 200
    assert bob.get(f"/jobs/{job}").status_code == 404
    assert alice.get(f"/jobs/{job}").json()["shared_with"] == []
    assert alice.get("/groups/gone").status_code == 404
    assert alice.post("/groups", json={"name": "gone"}).status_code == 201  # the name is free again


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("post", "/groups", {"name": "Bad Name"}, 422, "not valid"),
        ("post", "/groups", {"name": "x" * 65}, 422, "not valid"),
        ("post", "/groups", {"name": "ok", "extra": 1}, 422, "extra"),
        ("post", "/groups", {}, 422, "name"),
        ("post", "/groups", {"name": "ok2", "description": "d" * 1001}, 422, "1000"),
        ("put", "/groups/bad/members/bob", {"role": "king"}, 422, "role must be one of"),
        ("put", "/groups/bad/members/nobody", {"role": "member"}, 404, "no user named"),
        ("delete", "/groups/bad/members/carol", None, 404, "not a member"),
        ("get", "/groups/nope", None, 404, "no group"),
        ("delete", "/groups/nope", None, 404, "no group"),
        ("put", "/groups/nope/members/bob", {"role": "member"}, 404, "no group"),
    ],
)
def test_bad_input_is_a_clear_4xx(collab, method, path, body, status, words) -> None:
    alice = collab.person("alice")
    if alice.get("/groups/bad").status_code == 404:
        assert alice.post("/groups", json={"name": "bad"}).status_code == 201
    collab.person("bob"), collab.person("carol")
    kw = {"json": body} if body is not None else {}
    r = alice.request(method.upper(), path, **kw)
    assert r.status_code == status, r.text
    assert words.lower() in r.text.lower()
    assert r.json()["code"]


def test_public_callers_get_401_that_says_what_to_do(collab) -> None:
    with collab.public() as anon:
        for method, path in [("GET", "/groups"), ("POST", "/groups"), ("GET", "/me"), ("GET", "/links")]:
            r = anon.request(method, path, json={"name": "x"} if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
            assert "token" in r.json()["detail"]
        bad = anon.get("/groups", headers={"Authorization": "Bearer lab_nope_nope"})
        assert bad.status_code == 401
