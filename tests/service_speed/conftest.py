"""Bulk paths over HTTP: a 64^3 sample dataset (3 MB per velocity cutout, so the big-body fast paths run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labservice.devserver import write_sample_datasets
from labservice.limits import Limits
from labservice.settings import Settings
from tests.plugin.stack import make_settings

N = 64
BULK = Limits(
    points_per_request=200_000, max_cutout_bytes=64 << 20, requests_per_minute=100_000, max_concurrent=64
)


@pytest.fixture(scope="session")
def served_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_sample_datasets(tmp_path_factory.mktemp("bulk-data"), n=N)


@pytest.fixture(scope="session")
def settings(served_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        served_data, tmp_path_factory.mktemp("bulk"), max_body_bytes=16 << 20, sync_cutout_bytes=64 << 20
    )


@pytest.fixture(scope="module")
def bulk_token(make_token) -> str:
    return make_token("bulk", BULK)


@pytest.fixture(scope="module")
def reader(served_data: dict[str, str]):
    from labservice import open_dataset

    return open_dataset(served_data[f"periodic{N}"]).reader


@pytest.fixture(scope="module")
def data_path(served_data: dict[str, str]) -> Path:
    return Path(served_data[f"periodic{N}"])
