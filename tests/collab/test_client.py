"""The Python client's working-together calls: lab.me(), lab.groups, job.share(), job.link()."""

from __future__ import annotations

import httpx
import pytest

from labclient import Lab
from labclient.jobs import Job


def test_client_me_groups_share_and_link(collab) -> None:
    alice, bob = collab.person("alice"), collab.person("bob")
    job_id = collab.job(alice, b"from the client")
    with Lab(collab.url, alice.token, retries=0) as la, Lab(collab.url, bob.token, retries=0) as lb:
        assert la.me()["user"] == "alice"
        if "clientg" in {g["name"] for g in la.groups.list()}:
            la.groups.delete("clientg")
        assert la.groups.create("clientg", "made by the client")["role"] == "owner"
        la.groups.add("clientg", "bob")
        assert {"user": "bob", "role": "member"} in la.groups.get("clientg")["members"]
        assert "clientg" in {g["name"] for g in lb.groups}
        job = Job(la, job_id)
        assert job.share("clientg") == ["clientg"]
        shared = [j for j in lb.jobs(shared=True) if j.id == job_id]
        assert shared and shared[0].info["shared"] is True and job_id not in {j.id for j in lb.jobs()}
        assert Job(lb, job_id)._fetch_bytes("result.bin") == b"from the client"
        with pytest.raises(Exception, match="read-only"):
            Job(lb, job_id).cancel()
        link = job.link(hours=1)
        assert httpx.get(link["url"] + "/files/result.bin", timeout=30).content == b"from the client"
        assert link["id"] in {x["id"] for x in la.links()}
        la.revoke_link(link["id"])
        assert httpx.get(link["url"], timeout=30).status_code == 404
        assert job.unshare("clientg") == []
        lb.groups.remove("clientg", "bob")  # bob leaves
        assert "clientg" not in {g["name"] for g in lb.groups.list()}
        la.groups.delete("clientg")
