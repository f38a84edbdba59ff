"""Fixture chain for the hardening suite: demo data -> settings (jobs on) -> a real uvicorn server -> tokens.

One server for the whole session serves the demo datasets (isotropic64, channel64, cosmo64 and its
density) with the batch-job engine on an embedded Dask cluster, as ``labservice serve`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # the helper modules next to the tests (hardhelpers, st_hooks)

MIB = 1 << 20


@pytest.fixture(scope="session")
def hard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardening")


@pytest.fixture(scope="session")
def hard_settings(demo_data: Path, hard_dir: Path) -> Settings:
    if not (demo_data / "isotropic64").exists():
        raise RuntimeError(f"no demo data in {demo_data}; run `make data` or set LABSERVICE_DEMO_DATA")
    return Settings(
        data_dir=demo_data,
        token_db=hard_dir / "tokens.sqlite",
        scratch_url=str(hard_dir / "scratch"),
        jobs_enabled=True,
        cache_bytes=64 * MIB,  # small, so that the load test sees the bound
        public_requests_per_minute=1_000_000,
        public_max_concurrent=64,
        max_body_bytes=8 * MIB,
    )


@pytest.fixture(scope="session")
def hard_tokens(hard_settings: Settings) -> TokenStore:
    return TokenStore(hard_settings.token_db_path())  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def job_token(hard_tokens: TokenStore) -> str:
    """A token allowed small jobs: 2 at a time, 4 MiB each, 64 MiB of scratch."""
    _, token = hard_tokens.create(
        "hardening-jobs",
        Limits(
            points_per_request=20_000,
            max_cutout_bytes=4 * MIB,
            requests_per_minute=1_000_000,
            max_concurrent=64,
            jobs_allowed=True,
            max_running_jobs=2,
            scratch_bytes=64 * MIB,
            max_job_bytes=4 * MIB,
        ),
    )
    return token


@pytest.fixture(scope="session")
def hard_server(hard_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(hard_settings)) as running:
        yield running


@pytest.fixture
def api(hard_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hard_server.url + "/api/v1", timeout=120) as client:
        yield client
