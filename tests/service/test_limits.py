"""Tokens and per-caller limits: points per request, cutout bytes, rate (429 + Retry-After), concurrency."""

from __future__ import annotations

import httpx
import pytest

from labservice.errors import LimitExceeded, RateLimited, Unauthorized
from labservice.limits import InFlight, Limits, RateWindow, check_points
from labservice.middleware import client_address, parse_networks, query_token
from labservice.tokens import TokenStore

PTS = [[0.1, 0.2, 0.3]]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_raises_the_point_limit(http: httpx.Client, big_token: str) -> None:
    body = {"variable": "pressure", "time": 0.0, "points": PTS * 1000}
    public = http.post("/datasets/periodic16/points", json=body)
    assert public.status_code == 413 and "256" in public.json()["detail"]
    registered = http.post("/datasets/periodic16/points", json=body, headers=_auth(big_token))
    assert registered.status_code == 200, registered.text
    assert registered.headers["x-lab-cost"] == "1000"
    assert registered.headers["x-lab-caller"] == "big"
    info = http.get("/datasets/periodic16", headers=_auth(big_token)).json()
    assert info["limits"]["points_per_request"] == 20_000 and info["caller"]["name"] == "big"


def test_points_times_count_against_the_limit(http: httpx.Client) -> None:
    body = {"variable": "pressure", "times": {"start": 0, "end": 0.4, "step": 0.1}, "points": PTS * 60}
    r = http.post("/datasets/periodic16/points", json=body)
    assert r.status_code == 413 and "300" in r.json()["detail"]


def test_bad_tokens_are_401(http: httpx.Client, big_token: str) -> None:
    for header in ("Bearer lab_nothere_xyz", "Bearer " + big_token[:-2] + "zz", "Basic abc", "Bearer"):
        r = http.get("/datasets", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert "Authorization" in r.json()["detail"]


def test_rate_limit_answers_429_with_retry_after(http: httpx.Client, tokens: TokenStore) -> None:
    _, token = tokens.create("slow", Limits(requests_per_minute=3))
    codes = [http.get("/datasets", headers=_auth(token)) for _ in range(4)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    assert codes[3].status_code == 429
    assert int(codes[3].headers["retry-after"]) >= 1
    assert "per minute" in codes[3].json()["detail"]
    assert codes[2].headers["x-ratelimit-remaining"] == "0"


def test_revoked_token_stops_working(http: httpx.Client, tokens: TokenStore) -> None:
    record, token = tokens.create("temp", Limits())
    assert http.get("/datasets", headers=_auth(token)).status_code == 200
    tokens.revoke(record.id)
    # The server caches verified tokens for a few seconds; a fresh store instance sees the revocation now.
    with pytest.raises(Unauthorized):
        TokenStore(tokens.path).verify(token)


def test_cutout_limit_per_token(http: httpx.Client, big_token: str) -> None:
    params = {"variable": "velocity", "time": "0", "x": "0:16", "y": "0:16", "z": "0:8", "format": "npy"}
    assert http.get("/datasets/periodic16/cutout", params=params).status_code == 413  # 24 KiB > public 16 KiB
    r = http.get("/datasets/periodic16/cutout", params=params, headers=_auth(big_token))
    assert r.status_code == 200 and r.headers["x-lab-cost"] == str(16 * 16 * 8 * 3 * 4)


def test_only_hashes_are_stored(tokens: TokenStore, big_token: str) -> None:
    secret = big_token.split("_", 2)[2]
    assert secret.encode() not in tokens.path.read_bytes()


def test_rate_window_refills_over_time() -> None:
    window = RateWindow()
    assert window.take("a", 2, now=0.0) == 1
    assert window.take("a", 2, now=0.0) == 0
    with pytest.raises(RateLimited) as err:
        window.take("a", 2, now=1.0)
    assert err.value.retry_after == 29  # 2 per minute: one request every 30 s
    assert window.take("a", 2, now=31.0) == 0
    assert window.take("b", 2, now=31.0) == 1  # callers are independent


def test_in_flight_limit() -> None:
    gate = InFlight()
    gate.enter("a", 2)
    gate.enter("a", 2)
    with pytest.raises(RateLimited):
        gate.enter("a", 2)
    gate.leave("a")
    gate.enter("a", 2)


def test_check_points_cost() -> None:
    assert check_points(Limits(points_per_request=10), 5, 2) == 10
    with pytest.raises(LimitExceeded, match="5 points x 3 times = 15"):
        check_points(Limits(points_per_request=10), 5, 3)


def test_zarr_reads_with_query_token_count_in_the_token_bucket(http: httpx.Client, tokens: TokenStore) -> None:
    # The limits middleware resolves ?token= itself: such reads are the token's, not the public bucket's.
    _, token = tokens.create("zarrq", Limits(requests_per_minute=3, zarr_requests_per_minute=3))
    codes = []
    for _ in range(4):
        r = http.get("/datasets/periodic16/zarr/zarr.json", params={"token": token})
        codes.append(r.status_code)
        if r.status_code == 200:
            assert r.headers["x-lab-caller"] == "zarrq" and r.headers["x-ratelimit-limit"] == "3"
    assert codes == [200, 200, 200, 429]
    assert http.get("/datasets/periodic16/zarr/zarr.json").status_code == 200  # the public bucket is untouched
    bad = http.get("/datasets/periodic16/zarr/zarr.json", params={"token": "lab_nothere_xyz"})
    assert bad.status_code == 401


def test_query_token_is_read_only_on_the_zarr_view() -> None:
    assert query_token("/api/v1/datasets/d/zarr/x/c/0", b"token=lab_a_b") == "lab_a_b"
    assert query_token("/api/v1/datasets/d/zarr-stats", b"a=1&token=lab_a_b") == "lab_a_b"
    assert query_token("/api/v1/datasets/d/points", b"token=lab_a_b") is None


def test_forwarded_for_is_read_from_trusted_proxies_only() -> None:
    trusted = parse_networks(["127.0.0.1", "10.0.0.0/8"])
    assert client_address("127.0.0.1", "203.0.113.9", trusted) == "203.0.113.9"
    # The left hops are whatever the client wrote; the nearest untrusted hop is the one our proxy saw.
    assert client_address("127.0.0.1", "1.1.1.1, 203.0.113.9, 10.1.2.3", trusted) == "203.0.113.9"
    assert client_address("198.51.100.7", "203.0.113.9", trusted) == "198.51.100.7"  # peer not a proxy
    assert client_address("127.0.0.1", "not-an-ip", trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", None, trusted) == "127.0.0.1"
    with pytest.raises(ValueError, match="trusted_proxies"):
        parse_networks(["10.0.0.0/33"])
