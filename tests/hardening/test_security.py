"""Security against the real server: tokens, identifiers that become paths, limits before work, no
unpickling, CORS and security headers. The SQL lock-down is tested in tests/cosmology/test_sql.py.
"""

from __future__ import annotations

import http.client
import inspect
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest

from labservice.app import create_app
from labservice.devserver import ServerThread, write_sample_datasets
from labservice.errors import Unauthorized
from labservice.settings import Settings
from labservice.tokens import TokenStore

pytestmark = pytest.mark.dask  # the shared server runs the job engine

ROOT = Path(__file__).resolve().parents[2]
# Each way of spelling "go up and read a file": plain, absolute, URL-encoded, double-encoded, backslashes.
TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "%2Fetc%2Fpasswd",
    "..%5c..%5c..%5cetc%5cpasswd",
    "tokens.sqlite",
    "..",
    ".",
]


def raw_get(server: ServerThread, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (httpx would normalise '..' away before sending)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def done_job(server: ServerThread, job_token: str) -> str:
    """A finished job of ``job_token`` (a small points job)."""
    auth = {"Authorization": f"Bearer {job_token}"}
    body = {"kind": "points", "dataset": "isotropic64", "variable": "pressure", "time": 6.0,
            "points": [[0.1, 0.2, 0.3]]}  # fmt: skip
    with httpx.Client(base_url=server.url + "/api/v1", headers=auth, timeout=60) as http:
        job_id = http.post("/jobs", json=body).json()["id"]
        deadline = time.monotonic() + 120
        while (job := http.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert job["status"] == "done", job
    return job_id


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_path_traversal_is_refused_everywhere(server, job_token, done_job, evil) -> None:
    auth = {"Authorization": f"Bearer {job_token}"}
    paths = [
        f"/api/v1/datasets/{evil}",
        f"/api/v1/datasets/{evil}/cutout?variable=velocity&time=6",
        f"/api/v1/datasets/{evil}/snapshots",
        f"/api/v1/datasets/isotropic64/zarr/{evil}",
        f"/api/v1/datasets/isotropic64/zarr/velocity/{evil}",
        f"/api/v1/jobs/{evil}",
        f"/api/v1/jobs/{done_job}/files/{evil}",
        f"/api/v1/jobs/{done_job}/files/points.npy/{evil}",
    ]
    for path in paths:
        status, body = raw_get(server, path, auth)
        assert status in (400, 404, 422), (path, status, body[:200])
        assert b"root:" not in body and b"SQLite format" not in body, path


@pytest.mark.parametrize(
    "dataset", ["../isotropic64", "/etc/passwd", "file:///etc/passwd", "memory://x", "s3://b/x"]
)
def test_job_dataset_must_be_a_published_id(http, job_token, demo_data, dataset) -> None:
    """A job names a dataset by id only; a path or URL (even of a real dataset) is an unknown id."""
    auth = {"Authorization": f"Bearer {job_token}"}
    for name in (dataset, str(demo_data / "isotropic64")):
        r = http.post("/jobs", json={"kind": "cutout", "dataset": name, "variable": "velocity"}, headers=auth)
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "not_found"


def test_tokens_are_never_echoed(http, tokens: TokenStore, job_token: str, done_job: str) -> None:
    secret = job_token.split("_", 2)[2]
    auth = {"Authorization": f"Bearer {job_token}"}
    responses = [
        http.get("/datasets/isotropic64", headers=auth),
        http.get("/jobs", headers=auth),
        http.get(f"/jobs/{done_job}", headers=auth),
        http.get("/datasets/nope", headers=auth),
        http.get("/datasets", headers={"Authorization": f"Bearer {job_token}x"}),  # a wrong token
        http.get("/datasets", headers={"Authorization": f"Basic {job_token}"}),
    ]
    for r in responses:
        blob = r.text + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        assert secret not in blob and job_token not in blob, r.url
    assert responses[4].status_code == responses[5].status_code == 401
    # Only the hash is in the database file.
    raw = Path(tokens.path).read_bytes()
    assert secret.encode() not in raw


def test_token_check_gives_no_oracle(tokens: TokenStore, job_token: str) -> None:
    """Unknown id, wrong secret, garbage and revoked tokens fail alike; the comparison is timing-safe."""
    token_id = job_token.split("_", 2)[1]
    rec, revoked = tokens.create("to-revoke", tokens.list()[0].limits)
    tokens.revoke(rec.id)
    messages = set()
    for bad in (f"lab_{token_id}_wrong", "lab_000000000000_" + "x" * 43, "garbage", revoked):
        with pytest.raises(Unauthorized) as err:
            tokens.verify(bad)
        messages.add(err.value.message)
    assert len(messages) == 1
    assert "hmac.compare_digest" in inspect.getsource(TokenStore.verify)


def test_oversized_body_is_refused_before_it_is_read(server: ServerThread) -> None:
    """A declared 1 GiB body is answered 413 at once, without waiting for (or reading) the bytes."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/datasets/isotropic64/points HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{"
        )
        t0 = time.monotonic()
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("points", {"variable": "velocity", "time": 6.0, "points": np.zeros((5000, 3)).tolist()}, "points"),
        ("points", {"variable": "velocity", "times": {"start": 6, "end": 9, "step": 1e-9}, "points": [[1, 1, 1]]}, "times"),
        ("points", {"variable": "velocity", "times": {"start": 6, "end": 9, "step": 5e-324}, "points": [[1, 1, 1]]}, "times"),
        ("particles", {"points": [[1, 1, 1]], "t_start": 6, "t_end": 9, "dt": 1e-7}, "steps"),
        ("particles", {"points": [[1, 1, 1]], "t_start": 6, "t_end": 9, "dt": 0.01, "every": 5e-324}, "points"),
        ("threshold", {"variable": "velocity", "time": 6.0, "threshold": 1, "x": "0:100000000"}, "cutout"),
    ],
)  # fmt: skip
def test_limits_stop_requests_before_any_work(http, path, body, needle) -> None:
    t0 = time.monotonic()
    r = http.post(f"/datasets/isotropic64/{path}", json=body)
    assert r.status_code in (413, 422), r.text
    assert needle in r.json()["detail"]
    assert time.monotonic() - t0 < 5  # refused from the sizes alone, not after computing


def test_cutout_limit_is_checked_from_the_plan(http) -> None:
    r = http.get(
        "/datasets/isotropic64/cutout", params={"variable": "velocity", "time": 6.0, "x": "-4000:4000"}
    )
    assert r.status_code in (413, 422), r.text


@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        ("application/msgpack", msgpack.packb({"variable": msgpack.ExtType(42, b"\x80\x04K\x01."), "time": 6.0})),
        ("application/msgpack", msgpack.packb({"points": {"dtype": "object", "shape": [1, 3], "data": b"x" * 24}})),
        ("application/msgpack", msgpack.packb({"points": {"dtype": "|O", "shape": [1], "data": b"\x80\x04."}})),
        ("application/python-pickle", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."),
        ("application/octet-stream", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."),
    ],
)  # fmt: skip
def test_nothing_is_unpickled(http, content_type: str, payload: bytes) -> None:
    r = http.post("/datasets/isotropic64/points", content=payload, headers={"Content-Type": content_type})
    assert r.status_code == 422, r.text


def test_no_request_path_can_unpickle_or_eval() -> None:
    """No pickle loads, eval/exec or np.load(allow_pickle=True) in the code that handles requests."""
    pattern = re.compile(
        r"pickle\.loads?\(|\beval\(|\bexec\(|allow_pickle\s*=\s*True|yaml\.load\(|marshal\.loads"
    )
    folders = ["labservice", "storage", "cutout", "interpolation", "datasets"]
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for folder in folders
        for p in (ROOT / folder).rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []


def test_security_headers_on_every_response(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for path in ("/api/v1/health", "/api/v1/datasets/nope", "/docs", "/openapi.json", "/no/such/path"):
            r = http.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["x-frame-options"] == "DENY", path
            assert r.headers["referrer-policy"] == "no-referrer", path


# -- CORS ------------------------------------------------------------------------------------------
ORIGIN = "https://lab.example.org"


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    urls = write_sample_datasets(tmp_path_factory.mktemp("cors"), n=8)
    settings = Settings(datasets=urls, cors_origins=[ORIGIN])
    with ServerThread(create_app(settings)) as server:
        yield server


def _preflight(url: str, origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    return httpx.options(f"{url}/api/v1/datasets/periodic8/points", headers=headers, timeout=30)


def test_cors_is_off_by_default(server: ServerThread) -> None:
    r = httpx.get(f"{server.url}/api/v1/datasets", headers={"Origin": ORIGIN}, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in _preflight(server.url, ORIGIN).headers


def test_cors_allows_only_the_configured_origins(cors_server: ServerThread) -> None:
    ok = _preflight(cors_server.url, ORIGIN)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in ok.headers  # bearer tokens, never cookies
    r = httpx.get(f"{cors_server.url}/api/v1/datasets", headers={"Origin": ORIGIN}, timeout=30)
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-ratelimit-remaining" in r.headers["access-control-expose-headers"].lower()
    other = _preflight(cors_server.url, "https://evil.example.com")
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
