"""Client tests: the sample datasets behind the shared chain (tests/plugin/stack.py), small public limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labservice.limits import Limits
from labservice.settings import Settings
from tests.plugin.stack import make_settings

BIG = Limits(points_per_request=50_000, max_cutout_bytes=8 << 20, requests_per_minute=100_000, max_concurrent=16)


@pytest.fixture(scope="session")
def settings(served_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        served_data,
        tmp_path_factory.mktemp("client"),
        public_points_per_request=256,
        public_max_cutout_bytes=16 << 10,
        public_requests_per_minute=100_000,
        public_max_concurrent=8,
    )


@pytest.fixture(scope="module")
def big_token(make_token) -> str:
    return make_token("client-big", BIG)


@pytest.fixture(scope="session")
def local(served_data: dict[str, str]) -> Iterator[dict]:
    """The same datasets opened in process, for reference answers."""
    from labservice import open_dataset

    opened = {k: open_dataset(v) for k, v in served_data.items()}
    yield opened
    for ds in opened.values():
        ds.close()
