"""Fixture chain: sample datasets -> settings -> app -> a real uvicorn server -> HTTP clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labservice.app import create_app
from labservice.devserver import ServerThread, write_sample_datasets
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore

PUBLIC_POINTS = 256
BODY_LIMIT = 1 << 20


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("service-data")
    write_sample_datasets(folder, n=16)
    return folder


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    urls = {"periodic16": str(data_dir / "periodic16.zarr"), "wall16": str(data_dir / "wall16.zarr")}
    return Settings(
        datasets=urls,
        token_db=data_dir / "tokens.sqlite",
        max_body_bytes=BODY_LIMIT,
        public_points_per_request=PUBLIC_POINTS,
        public_max_cutout_bytes=16 << 10,
        public_requests_per_minute=100_000,
        public_max_concurrent=64,
        sync_cutout_bytes=1 << 20,
    )


@pytest.fixture(scope="session")
def tokens(settings: Settings) -> TokenStore:
    return TokenStore(settings.token_db_path())  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def big_token(tokens: TokenStore) -> str:
    """A registered token with larger limits than the public ones."""
    _, token = tokens.create(
        "big",
        Limits(
            points_per_request=20_000,
            max_cutout_bytes=1 << 20,
            requests_per_minute=100_000,
            max_concurrent=64,
        ),
    )
    return token


@pytest.fixture(scope="session")
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(settings)) as running:
        yield running


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/api/v1", timeout=120) as client:
        yield client
