"""Fixtures for the batch-job tests: a synthetic dataset, an embedded engine, a real Dask cluster."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import jobhelpers  # noqa: E402

from labservice.jobs import JobEngine  # noqa: E402


@pytest.fixture(scope="session")
def helpers():
    """The helper module (analytic fields, cluster processes)."""
    return jobhelpers


@pytest.fixture(scope="session")
def synthetic_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 64^3 periodic dataset with velocity and pressure at 3 times, chunks 16^3, shards 32^3."""
    url = str(tmp_path_factory.mktemp("data") / "synthetic.zarr")
    jobhelpers.build(url, n=64, nt=3)
    return url


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobEngine]:
    """An engine with an embedded LocalCluster (2 worker processes x 1 thread), for the session."""
    eng = jobhelpers.make_engine(tmp_path_factory.mktemp("engine")).start()
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[jobhelpers.DaskProcesses]:
    """A real ``dask scheduler`` and 2 ``dask worker`` processes on 127.0.0.1."""
    procs = jobhelpers.DaskProcesses(tmp_path_factory.mktemp("dask"))
    try:
        procs.wait_workers(2)
        yield procs
    finally:
        procs.stop()
