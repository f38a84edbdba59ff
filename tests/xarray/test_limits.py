"""Tokens and the byte budget on the zarr view: headers, 429 with Retry-After, 413, buckets."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from labservice.errors import LimitExceeded, RateLimited
from labservice.limits import ByteBudget, Caller, Limits, request_slot

SHARD = "/api/v1/datasets/periodic16/zarr/velocity/c/0/0/0/0/0"


def _caller(per_minute: int, key: str = "t1") -> Caller:
    return Caller(token_id=key, name=key, limits=Limits(bytes_per_minute=per_minute))


def test_byte_budget_refills_and_says_when_to_retry() -> None:
    budget, who = ByteBudget(), _caller(600)
    assert budget.charge(who, 400, now=0.0) == 200
    with pytest.raises(RateLimited) as info:
        budget.charge(who, 300, now=0.0)
    assert info.value.retry_after == 10  # 100 bytes short at 10 bytes per second
    assert budget.charge(who, 300, now=10.0) == 0
    assert budget.remaining(who, now=70.0) == 600  # never more than one minute's worth
    assert budget.served(who) == 700
    assert budget.remaining(_caller(600, "other"), now=10.0) == 600  # buckets are per caller
    with pytest.raises(LimitExceeded, match="per minute"):
        budget.charge(who, 601, now=100.0)


def test_zarr_reads_have_their_own_wider_bucket() -> None:
    who = Caller(token_id=None, name="1.2.3.4", limits=Limits(max_concurrent=4, requests_per_minute=600))
    zarr = request_slot(who, "/api/v1/datasets/iso/zarr/velocity/c/0/0/0/0/0")
    other = request_slot(who, "/api/v1/datasets/iso/cutout")
    assert other.key == who.key and (other.per_minute, other.max_concurrent) == (600, 4)
    assert zarr.key != who.key
    assert zarr.max_concurrent == Limits().zarr_max_concurrent > 4
    assert zarr.per_minute == Limits().zarr_requests_per_minute > 600
    assert request_slot(who, "/api/v1/datasets/iso/zarr-stats").key == who.key


def test_budget_headers_and_429(server, new_token: Callable[..., str], stats: Callable[..., dict]) -> None:
    token = new_token(bytes_per_minute=100_000)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        first = c.get(SHARD, headers=auth)
        assert first.status_code == 200
        size = len(first.content)
        assert 40_000 < size < 50_000
        assert first.headers["x-lab-bytes-limit"] == "100000"
        assert first.headers["x-lab-cost"] == str(size)
        assert int(first.headers["x-lab-bytes-remaining"]) == 100_000 - size
        head = c.head(SHARD, headers=auth)  # headers only: free
        assert head.status_code == 200 and int(head.headers["x-lab-bytes-remaining"]) >= 100_000 - size
        # ?token= draws on the same budget as the header
        second = c.get(SHARD, params={"token": token})
        assert second.status_code == 200
        left = int(second.headers["x-lab-bytes-remaining"])
        assert left < 100_000 - 2 * size + 1000
        assert int(second.headers["x-lab-bytes-served"]) == 2 * size
        third = c.get(SHARD, headers=auth)
        assert third.status_code == 429
        assert 1 <= int(third.headers["retry-after"]) <= 60
        assert "per minute" in third.json()["detail"]
        # a small range still fits
        part = c.get(SHARD, headers={**auth, "Range": "bytes=0-999"})
        assert part.status_code == 206 and part.headers["x-lab-cost"] == "1000"
        assert c.get(SHARD, headers={**auth, "If-None-Match": first.headers["etag"]}).status_code == 304
    mine = stats("periodic16", token)["you"]
    assert mine["bytes_served"] == 2 * size + 1000 and mine["bytes_per_minute"] == 100_000


def test_read_larger_than_the_budget_is_413(server, new_token: Callable[..., str]) -> None:
    token = new_token(bytes_per_minute=10_000)
    r = httpx.get(server.url + SHARD, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 413 and "byte range" in r.json()["detail"]


def test_public_headers_and_bad_tokens(server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        public = c.get("/api/v1/datasets/periodic16/zarr/zarr.json")
        assert public.status_code == 200
        assert public.headers["x-lab-bytes-limit"] == str(1 << 30)  # the documented public default
        assert public.headers["x-ratelimit-limit"] == str(Limits().zarr_requests_per_minute)
        assert c.get(SHARD, headers={"Authorization": "Bearer lab_nope_nope"}).status_code == 401
        assert c.get(SHARD, params={"token": "lab_nope_nope"}).status_code == 401
        assert c.get("/api/v1/datasets/periodic16/zarr-stats", params={"token": "nope"}).status_code == 401
        assert c.get("/api/v1/datasets/nosuch/zarr-stats").status_code == 404
