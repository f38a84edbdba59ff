"""The declared contracts: what every FieldStore sets, what a RegionSource offers, and the settings jobs read.

Callers read these members directly (no ``getattr`` probing), so a back end that forgets one must fail here.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr.abc.store

from labservice.interpolation.blocks import BlockLayout, block_array
from labservice.settings import Settings
from labservice.storage import ChunkCache, ChunkReader, DatasetMeta, create_store, open_store

N = 16
SUFFIX = {"zarr": ".zarr", "hdf5": ".h5"}


def small_meta() -> DatasetMeta:
    axis = {"size": N, "start": 0.0, "step": 1.0, "periodic": True}
    return DatasetMeta.model_validate(
        {
            "id": "contract",
            "title": "contract",
            "grid": {"x": axis, "y": axis, "z": axis},
            "times": [0.0],
            "variables": {"p": {"components": ["p"]}},
            "chunks": (8, 8, 8),
            "shards": (16, 16, 16),
        }
    )


def filled(value: float) -> np.ndarray:
    return np.full((N, N, N, 1), value, dtype=np.float32)


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_every_back_end_sets_the_declared_members(tmp_path, backend):
    url = str(tmp_path / f"ds{SUFFIX[backend]}")
    store = create_store(url, small_meta(), backend=backend)
    store.write_box("p", 0, 0, 0, 0, filled(1.0))
    store.close()
    store = open_store(url)
    try:
        assert store.url == url
        assert store.storage_options is None
        assert isinstance(store.cache_token, str) and store.cache_token.startswith(url)
        if backend == "zarr":
            assert isinstance(store.zarr_store, zarr.abc.store.Store)
        else:
            assert store.zarr_store is None
        arrays, nbytes = store.read_chunks("p", 0, [(0, 0, 0), (1, 1, 1)])
        assert [a.shape for a in arrays] == [(8, 8, 8, 1)] * 2 and nbytes > 0
        assert all(np.all(a == 1.0) for a in arrays)
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_a_write_renews_the_cache_token_so_cached_chunks_and_blocks_go_stale(tmp_path, backend):
    store = create_store(str(tmp_path / f"ds{SUFFIX[backend]}"), small_meta(), backend=backend)
    try:
        store.write_box("p", 0, 0, 0, 0, filled(1.0))
        reader = ChunkReader(store, ChunkCache(1 << 24))
        layout = BlockLayout(store.meta, "p", 16)
        whole = lambda: (np.zeros(3, dtype=np.int64), np.full(3, N, dtype=np.int64))  # noqa: E731
        assert np.all(reader.region("p", 0, (0, 0, 0), (N, N, N)) == 1.0)
        assert np.all(block_array(reader, layout, 0, 0, whole)[0] == 1.0)
        token = store.cache_token
        store.write_box("p", 0, 0, 0, 0, filled(2.0))
        assert store.cache_token != token
        assert np.all(reader.region("p", 0, (0, 0, 0), (N, N, N)) == 2.0)
        assert np.all(block_array(reader, layout, 0, 0, whole)[0] == 2.0)
    finally:
        store.close()


def test_job_settings_are_fields_read_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LABSERVICE_JOB_DB", str(tmp_path / "registry.sqlite"))
    monkeypatch.setenv("LABSERVICE_SCRATCH_OPTIONS", '{"endpoint_url": "http://s3:8333", "anon": true}')
    settings = Settings()
    assert settings.job_db == tmp_path / "registry.sqlite"
    assert settings.scratch_options == {"endpoint_url": "http://s3:8333", "anon": True}
    for name in ("job_db", "scratch_options"):
        assert Settings.model_fields[name].description
    monkeypatch.delenv("LABSERVICE_JOB_DB")
    assert Settings().job_db is None  # unset: the engine picks its default place
