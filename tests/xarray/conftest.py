"""xarray tests: the sample datasets and the isotropic64 demo behind the shared chain (tests/plugin/stack.py).

The server keeps the public limits' defaults (4 requests in flight, 16 MiB per request, 1 GiB per minute),
so the tests see what a caller without a token sees.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from labservice.devserver import ServerThread
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore
from tests.plugin.data import require_demo
from tests.plugin.stack import make_settings


@pytest.fixture(scope="session")
def served_data(sample_urls: dict[str, str], demo_data: Path) -> dict[str, str]:
    """What this folder serves: the sample datasets and isotropic64."""
    return {**sample_urls, "isotropic64": str(require_demo(demo_data, "isotropic64"))}


@pytest.fixture(scope="session")
def settings(served_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(served_data, tmp_path_factory.mktemp("xarray"))


@pytest.fixture
def new_token(tokens: TokenStore) -> Callable[..., str]:
    """Make a fresh token (its own buckets and read history); keyword arguments set its limits."""

    def make(**limits: int) -> str:
        return tokens.create("xarray-test", Limits(**limits))[1]

    return make


@pytest.fixture(scope="module")
def hostport(server: ServerThread) -> str:
    return f"{server.host}:{server.port}"


@pytest.fixture(scope="module")
def view_url(server: ServerThread) -> Callable[[str], str]:
    """dataset id -> the folder URL of its zarr view."""
    return lambda dataset_id: f"{server.url}/api/v1/datasets/{dataset_id}/zarr/"


@pytest.fixture(scope="module")
def stats(server: ServerThread) -> Callable[..., dict]:
    """zarr-stats of a dataset as seen by a caller (a token, or None for the public)."""

    def get(dataset_id: str, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.get(f"{server.url}/api/v1/datasets/{dataset_id}/zarr-stats", headers=headers, timeout=60)
        r.raise_for_status()
        return r.json()

    return get
