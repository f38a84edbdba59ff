"""Service tests: the sample datasets behind the shared chain (tests/plugin/stack.py), small public limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from labservice.limits import Limits
from labservice.settings import Settings
from tests.plugin.stack import make_settings

PUBLIC_POINTS = 256
BODY_LIMIT = 1 << 20
BIG = Limits(points_per_request=20_000, max_cutout_bytes=1 << 20, requests_per_minute=100_000, max_concurrent=64)


@pytest.fixture(scope="session")
def data_dir(sample_dir: Path) -> Path:
    """The folder of the served datasets."""
    return sample_dir


@pytest.fixture(scope="session")
def settings(served_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        served_data,
        tmp_path_factory.mktemp("service"),
        max_body_bytes=BODY_LIMIT,
        public_points_per_request=PUBLIC_POINTS,
        public_max_cutout_bytes=16 << 10,
        public_requests_per_minute=100_000,
        public_max_concurrent=64,
        sync_cutout_bytes=1 << 20,
    )


@pytest.fixture(scope="module")
def big_token(make_token) -> str:
    """A registered token with larger limits than the public ones."""
    return make_token("big", BIG)
