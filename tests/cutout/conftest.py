"""Cutout tests: the tiny random field of tests/plugin/grids.py, written as zarr and as HDF5."""

from __future__ import annotations

import pytest

from tests.plugin.grids import WrittenDataset, small_meta, write_random


@pytest.fixture(scope="session", params=["zarr", "hdf5"])
def dataset(request, tmp_path_factory) -> WrittenDataset:
    suffix = ".h5" if request.param == "hdf5" else ".zarr"
    return write_random(str(tmp_path_factory.mktemp("cut") / f"tiny{suffix}"), small_meta())


@pytest.fixture(scope="session")
def zarr_dataset(tmp_path_factory) -> WrittenDataset:
    return write_random(str(tmp_path_factory.mktemp("cutz") / "tiny.zarr"), small_meta(), seed=1)
