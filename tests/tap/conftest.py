"""TAP tests: the small real simulation behind a real server with the job engine (embedded Dask), and a
token allowed jobs. Short limits (2 s per query, 50 rows) so the time-limit and MAXREC cases run fast."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labservice.datasets.simulation import Simulation
from labservice.limits import Limits
from labservice.settings import Settings
from tests.plugin.cosmo import SIM, build_small_sim
from tests.plugin.stack import jobs_settings

MAX_ROWS = 50  # the small simulation has 79 halos
TIMEOUT = 2.0
TAP_LIMITS = Limits(jobs_allowed=True, requests_per_minute=100_000, max_concurrent=16, max_running_jobs=4,
                    max_job_bytes=64 << 20, scratch_bytes=256 << 20)


@pytest.fixture(scope="session")
def tap_sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_sim(tmp_path_factory.mktemp("tap-sim"), name=SIM)


@pytest.fixture(scope="session")
def settings(tap_sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return jobs_settings(tap_sim_dir.parent, tmp_path_factory.mktemp("tap-work"), sql_max_rows=MAX_ROWS,
                         sql_timeout_seconds=TIMEOUT, public_requests_per_minute=100_000, public_max_concurrent=16)


@pytest.fixture(scope="module")
def tap_url(server) -> str:
    return server.url + "/tap"


@pytest.fixture(scope="module")
def tap_token(make_token) -> str:
    return make_token("tap-user", TAP_LIMITS)


@pytest.fixture(scope="module")
def session(tap_token: str):
    """A requests session with the bearer token, as pyvo and astroquery users pass it."""
    import requests

    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {tap_token}"
    yield s
    s.close()


@pytest.fixture(scope="session")
def local(tap_sim_dir: Path) -> Iterator[Simulation]:
    sim = Simulation(tap_sim_dir)
    yield sim
    sim.close()
