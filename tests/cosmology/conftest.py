"""Shared fixtures: one small real simulation (32^3 particles in 50 Mpc/h, 8 snapshots), built once per test session."""

from __future__ import annotations

import pytest

from labservice.datasets.cosmo import build_cosmo


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory):
    """A real PM run ingested through the Gadget files: the path of the dataset folder."""
    return build_cosmo(tmp_path_factory.mktemp("cosmo"), size=32, n_snapshots=8, seed=7, box=50.0)
