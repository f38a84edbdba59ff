"""Cosmology library tests: one small real simulation (tests/plugin/cosmo.py), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.cosmo import build_small_sim


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PM run ingested through the Gadget files: the path of the dataset folder."""
    return build_small_sim(tmp_path_factory.mktemp("cosmo"))
