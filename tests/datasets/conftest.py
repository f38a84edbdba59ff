"""Ingest tests: HDF5 sources and their descriptor, written by tests/plugin/sources.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.sources import Sources, write_sources


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    """The default layout: one file per time step, one dataset per component, zyx order."""
    return write_sources(tmp_path / "sim")
