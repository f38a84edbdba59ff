"""Fixture chain: a small real N-body simulation -> settings -> a real uvicorn server -> labclient.Lab."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labclient import Lab
from labservice.app import create_app
from labservice.datasets.cosmo import build_cosmo
from labservice.datasets.simulation import Simulation
from labservice.devserver import ServerThread
from labservice.settings import Settings

SIM = "apisim"
CUTOUT_LIMIT = 64 << 10


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32^3 particles in 50 Mpc/h, 8 snapshots (a few seconds): the path of the dataset folder."""
    return build_cosmo(tmp_path_factory.mktemp("cosmo-api"), size=32, n_snapshots=8, seed=7, box=50.0, name=SIM)


@pytest.fixture(scope="session")
def local(sim_dir: Path) -> Iterator[Simulation]:
    """The same simulation opened in process, for reference answers."""
    sim = Simulation(sim_dir)
    yield sim
    sim.close()


@pytest.fixture(scope="session")
def server(sim_dir: Path) -> Iterator[ServerThread]:
    settings = Settings(
        data_dir=sim_dir.parent,
        token_db=sim_dir.parent / "tokens.sqlite",
        public_max_cutout_bytes=CUTOUT_LIMIT,
        public_requests_per_minute=100_000,
        public_max_concurrent=16,
    )
    with ServerThread(create_app(settings)) as running:
        yield running


@pytest.fixture(scope="session")
def lab(server: ServerThread) -> Iterator[Lab]:
    with Lab(server.url, retries=0) as client:
        yield client


@pytest.fixture(scope="session")
def sim(lab: Lab):
    return lab.dataset(SIM)


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/v1/datasets/{SIM}", timeout=60) as client:
        yield client
