"""Fixture chain: sample datasets + the isotropic64 demo -> settings -> a real uvicorn server -> tokens.

The server keeps the public limits' defaults (4 requests in flight, 16 MiB per request, 1 GiB per minute),
so the tests see what a caller without a token sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labservice.app import create_app
from labservice.devserver import ServerThread, write_sample_datasets
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore


@pytest.fixture(scope="session")
def xr_urls(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict[str, str]:
    urls = write_sample_datasets(tmp_path_factory.mktemp("xarray-data"), n=16)
    iso = demo_data / "isotropic64"
    assert (iso / "zarr.json").exists(), f"demo data missing at {iso}; run `make demo`"
    return {**urls, "isotropic64": str(iso)}


@pytest.fixture(scope="session")
def xr_settings(xr_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(datasets=xr_urls, token_db=tmp_path_factory.mktemp("xarray-tokens") / "tokens.sqlite")


@pytest.fixture(scope="session")
def xr_tokens(xr_settings: Settings) -> TokenStore:
    return TokenStore(xr_settings.token_db_path())  # type: ignore[arg-type]


@pytest.fixture
def new_token(xr_tokens: TokenStore) -> Callable[..., str]:
    """Make a fresh token (its own buckets and read history); keyword arguments set its limits."""

    def make(**limits: int) -> str:
        return xr_tokens.create("xarray-test", Limits(**limits))[1]

    return make


@pytest.fixture(scope="session")
def xr_server(xr_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(xr_settings)) as running:
        yield running


@pytest.fixture(scope="session")
def hostport(xr_server: ServerThread) -> str:
    return f"{xr_server.host}:{xr_server.port}"


@pytest.fixture(scope="session")
def view_url(xr_server: ServerThread) -> Callable[[str], str]:
    """dataset id -> the folder URL of its zarr view."""
    return lambda dataset_id: f"{xr_server.url}/api/v1/datasets/{dataset_id}/zarr/"


@pytest.fixture(scope="session")
def stats(xr_server: ServerThread) -> Callable[..., dict]:
    """zarr-stats of a dataset as seen by a caller (a token, or None for the public)."""
    import httpx

    def get(dataset_id: str, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.get(f"{xr_server.url}/api/v1/datasets/{dataset_id}/zarr-stats", headers=headers, timeout=60)
        r.raise_for_status()
        return r.json()

    return get
