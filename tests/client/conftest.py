"""Fixture chain for client tests: sample datasets -> app -> a real uvicorn server -> labclient.Lab."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labservice.app import create_app
from labservice.devserver import ServerThread, write_sample_datasets
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore


@pytest.fixture(scope="session")
def sample_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_sample_datasets(tmp_path_factory.mktemp("client-data"), n=16)


@pytest.fixture(scope="session")
def client_settings(sample_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        datasets=sample_urls,
        token_db=tmp_path_factory.mktemp("client-tokens") / "tokens.sqlite",
        public_points_per_request=256,
        public_max_cutout_bytes=16 << 10,
        public_requests_per_minute=100_000,
        public_max_concurrent=8,
    )


@pytest.fixture(scope="session")
def tokens(client_settings: Settings) -> TokenStore:
    return TokenStore(client_settings.token_db_path())  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def big_token(tokens: TokenStore) -> str:
    _, token = tokens.create(
        "client-big",
        Limits(
            points_per_request=50_000,
            max_cutout_bytes=8 << 20,
            requests_per_minute=100_000,
            max_concurrent=16,
        ),
    )
    return token


@pytest.fixture(scope="session")
def server(client_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(client_settings)) as running:
        yield running


@pytest.fixture(scope="session")
def local(sample_urls: dict[str, str]) -> Iterator[dict]:
    """The same datasets opened in process, for reference answers."""
    from labservice import open_dataset

    opened = {k: open_dataset(v) for k, v in sample_urls.items()}
    yield opened
    for ds in opened.values():
        ds.close()


@pytest.fixture
def data_path(sample_urls: dict[str, str]) -> Path:
    return Path(sample_urls["periodic16"]).parent
