"""Batch-job tests: a synthetic dataset and an embedded engine (helpers in tests/plugin/jobs.py; the real
Dask processes, ``dask_processes``, come from tests/plugin/dask.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from labservice.jobs import JobEngine
from tests.plugin import jobs as jobhelpers


@pytest.fixture(scope="session")
def helpers() -> ModuleType:
    """The helper module (analytic fields, engine factory, progress polling)."""
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
