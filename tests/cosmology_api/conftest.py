"""Cosmology API tests: a small real N-body simulation behind the shared chain (tests/plugin/stack.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labservice.datasets.simulation import Simulation
from labservice.settings import Settings
from tests.plugin.cosmo import SIM, build_small_sim
from tests.plugin.stack import make_settings

CUTOUT_LIMIT = 64 << 10


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulation's folder, served as ``SIM``."""
    return build_small_sim(tmp_path_factory.mktemp("cosmo-api"), name=SIM)


@pytest.fixture(scope="session")
def served_data(sim_dir: Path) -> Path:
    return sim_dir.parent


@pytest.fixture(scope="session")
def settings(served_data: Path) -> Settings:
    return make_settings(
        served_data,
        served_data,
        public_max_cutout_bytes=CUTOUT_LIMIT,
        public_requests_per_minute=100_000,
        public_max_concurrent=16,
    )


@pytest.fixture(scope="session")
def http_base() -> str:
    return f"/api/v1/datasets/{SIM}"


@pytest.fixture(scope="session")
def local(sim_dir: Path) -> Iterator[Simulation]:
    """The same simulation opened in process, for reference answers."""
    sim = Simulation(sim_dir)
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def sim(lab):
    return lab.dataset(SIM)
