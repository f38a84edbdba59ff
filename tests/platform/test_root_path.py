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
