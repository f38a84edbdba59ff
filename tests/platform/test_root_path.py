"""`labservice serve --workers 2 --root-path /lab` behind a real nginx that serves it under /lab/.

The portal's links (pages and scripts) follow the prefix, and X-Forwarded-For, appended by the trusted
proxy, names the client for the public limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from labservice.devserver import ServeProcess
from tests.plugin.nginx import NginxProxy, nginx_available
from tests.plugin.redis import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")]

RATE = 4


@pytest.fixture(scope="module")
def proxy(
    redis_server: RedisServer, sample_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NginxProxy]:
    folder = tmp_path_factory.mktemp("rootpath")
    env = {
        "LABSERVICE_DATASETS": json.dumps(sample_urls),
        "LABSERVICE_TOKEN_DB": str(folder / "tokens.sqlite"),
        "LABSERVICE_JOBS_ENABLED": "false",
        "LABSERVICE_REDIS_URL": redis_server.url,
        "LABSERVICE_PUBLIC_REQUESTS_PER_MINUTE": str(RATE),
        "LABSERVICE_TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    with ServeProcess(None, env, folder / "serve.log", workers=2, args=["--root-path", "/lab"]) as server:
        server.wait_ready(120)
        with NginxProxy(folder, "/lab", server.port) as nginx:
            yield nginx


def test_portal_links_follow_the_root_path(proxy: NginxProxy) -> None:
    home = httpx.get(proxy.url + "/lab/", timeout=30)
    assert home.status_code == 200, home.text
    links = re.findall(r'(?:href|src)="([^"]+)"', home.text)
    assert links and all(link.startswith("/lab/") for link in links), links
    assert '<meta name="lab-root" content="/lab">' in home.text
    for link in {*links[:12], "/lab/api/v1/datasets/periodic16", "/lab/static/js/common.js"}:
        assert httpx.get(proxy.url + link, timeout=30).status_code == 200, link
    page = httpx.get(proxy.url + "/lab/datasets/periodic16", timeout=30).text
    assert 'href="/lab/api/v1/datasets/periodic16"' in page


def test_forwarded_for_from_the_proxy_names_the_client(proxy: NginxProxy) -> None:
    def codes(client: str) -> list[int]:
        return [
            httpx.get(proxy.url + "/lab/api/v1/datasets", headers={"X-Forwarded-For": client}).status_code
            for _ in range(RATE + 1)
        ]

    # nginx appends its peer (this test, 127.0.0.1, trusted too) to what the client sent; the nearest
    # untrusted hop is the client's address.
    assert codes("192.0.2.1") == [200] * RATE + [429]
    assert codes("192.0.2.2") == [200] * RATE + [429]  # another client, its own bucket


@pytest.fixture(scope="module")
def jobs_proxy(sample_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NginxProxy, str]]:
    """One `labservice serve --root-path /lab` with the embedded job engine, behind nginx; and a job token."""
    from labservice.limits import Limits
    from labservice.tokens import TokenStore

    folder = tmp_path_factory.mktemp("rootpath-jobs")
    _, token = TokenStore(folder / "tokens.sqlite").create("rooted", Limits(jobs_allowed=True, max_running_jobs=2, scratch_bytes=64 << 20, max_job_bytes=32 << 20))
    env = {
        "LABSERVICE_DATASETS": json.dumps(sample_urls),
        "LABSERVICE_TOKEN_DB": str(folder / "tokens.sqlite"),
        "LABSERVICE_JOB_DB": str(folder / "tokens.sqlite"),
        "LABSERVICE_SCRATCH_URL": str(folder / "scratch"),
        "LABSERVICE_JOBS_ENABLED": "true",
    }
    with ServeProcess(None, env, folder / "serve.log", args=["--root-path", "/lab"]) as server:
        server.wait_ready(120, jobs=True)
        with NginxProxy(folder, "/lab", server.port) as nginx:
            yield nginx, token


def test_job_location_and_links_follow_the_root_path(jobs_proxy: tuple[NginxProxy, str]) -> None:
    import time

    nginx, token = jobs_proxy
    with httpx.Client(base_url=nginx.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as lab:
        job = {"kind": "points", "dataset": "periodic16", "variable": "pressure", "time": 0.1,
               "points": [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]}  # fmt: skip
        r = lab.post("/lab/api/v1/jobs", json=job)
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        assert location == f"/lab/api/v1/jobs/{r.json()['id']}" and r.json()["links"]["self"] == location
        deadline = time.monotonic() + 60
        while (body := lab.get(location).json())["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert body["status"] == "done", body
        assert body["links"]["self"] == location and body["links"]["files"]
        for link in body["links"]["files"].values():
            assert link.startswith(location + "/files/") and lab.get(link).status_code == 200, link
        assert all(j["links"]["self"].startswith("/lab/") for j in lab.get("/lab/api/v1/jobs").json()["jobs"])
