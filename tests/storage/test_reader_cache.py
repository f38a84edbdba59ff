"""The chunk cache is bounded in bytes and thread-safe; the reader stays correct under threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from labservice.errors import InvalidInput
from labservice.storage import ChunkCache, ChunkReader, DatasetMeta, create_store, default_cache


def _run_in_threads(work, n: int) -> None:
    """work(seed) in n threads at once, seeds 0..n-1; returns when all are done."""
    threads = [threading.Thread(target=work, args=(s,)) for s in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)


def test_lru_evicts_oldest_and_respects_the_byte_bound() -> None:
    cache = ChunkCache(max_bytes=3 * 800)
    arrays = {k: np.full(100, k, dtype=np.float64) for k in range(4)}  # 800 bytes each
    for k in range(3):
        cache.put(k, arrays[k])
    assert cache.get(0) is arrays[0]  # touching 0 makes 1 the oldest
    cache.put(3, arrays[3])
    assert cache.get(1) is None and cache.get(0) is not None and cache.get(3) is not None
    assert cache.nbytes == 2400 and len(cache) == 3
    cache.put("huge", np.zeros(1000))  # larger than the whole cache: not cached, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3
    assert not arrays[0].flags.writeable  # shared arrays are frozen
    cache.resize(800)
    assert cache.nbytes == 800 and cache.get(3) is not None
    with pytest.raises(InvalidInput):
        ChunkCache(-1)
    assert default_cache() is default_cache()


def test_cache_hammered_from_threads_stays_bounded_and_consistent() -> None:
    cache = ChunkCache(max_bytes=50 * 4096)
    errors: list[str] = []
    peak = [0]

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(3000):
            k = int(rng.integers(200))
            a = cache.get(k)
            if a is None:
                cache.put(k, np.full(512, k, dtype=np.float64))  # 4096 bytes
            elif a[0] != k:
                errors.append(f"key {k} returned data of key {a[0]}")
            peak[0] = max(peak[0], cache.nbytes)

    _run_in_threads(work, 8)
    assert not errors
    assert peak[0] <= cache.max_bytes
    assert cache.nbytes == sum(cache.get(k).nbytes for k in range(200) if cache.get(k) is not None)
    assert len(cache) <= 50


def test_reader_under_threads_with_a_small_cache(tmp_path) -> None:
    meta = DatasetMeta.model_validate({
        "id": "hammer", "title": "h",
        "grid": {a: {"size": 24, "start": 0.0, "step": 1.0, "periodic": True} for a in "xyz"},
        "times": [0.0], "variables": {"u": {"components": ["a", "b"]}},
        "chunks": (4, 4, 4), "shards": (8, 8, 8),
    })
    data = np.random.default_rng(0).standard_normal((24, 24, 24, 2)).astype(np.float32)
    store = create_store(str(tmp_path / "h.zarr"), meta)
    store.write_box("u", 0, 0, 0, 0, data)
    chunk_bytes = 4 * 4 * 4 * 2 * 4
    reader = ChunkReader(store, ChunkCache(10 * chunk_bytes))  # far smaller than the working set
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(150):
            lo = rng.integers(-30, 30, size=3)
            hi = lo + rng.integers(1, 7, size=3)
            got = reader.region("u", 0, lo, hi)
            want = data.take(np.arange(lo[0], hi[0]), 0, mode="wrap").take(np.arange(lo[1], hi[1]), 1, mode="wrap")
            want = want.take(np.arange(lo[2], hi[2]), 2, mode="wrap")
            if not np.array_equal(got, want):
                errors.append(f"wrong box {lo}..{hi}")

    _run_in_threads(work, 6)
    assert not errors
    assert reader.cache.nbytes <= 10 * chunk_bytes
    s = reader.stats()
    assert s["cache_hits"] > 0 and s["cache_misses"] > 0
    assert s["chunks_read"] == s["cache_misses"]
