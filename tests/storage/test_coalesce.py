"""Coalesced shard reads: neighbouring inner chunks in one ranged GET, with the same bytes and checks.

The GETs are counted by SeaweedFS itself (its Prometheus counters), not by our code.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import fsspec
import numpy as np
import pytest

from labservice.errors import CorruptData
from labservice.storage import ChunkCache, ChunkReader, create_store, open_store
from labservice.storage._common import remote_errors
from labservice.storage.byte_ranges import coalesce
from labservice.storage.obstore_reads import obstore_reads
from tests.plugin.s3 import SeaweedS3
from tests.storage.test_conformance import NT, bits, field, make_meta


@pytest.mark.parametrize(
    ("ranges", "gap", "most", "want"),
    [
        ([(10, 20), (0, 10), (20, 25)], 0, 100, [(0, 25, [1, 0, 2])]),  # touching, in any order
        ([(0, 10), (12, 20)], 0, 100, [(0, 10, [0]), (12, 20, [1])]),  # a gap is not merged by default
        ([(0, 10), (12, 20)], 2, 100, [(0, 20, [0, 1])]),  # unless allowed
        ([(0, 10), (10, 20), (20, 30)], 0, 20, [(0, 20, [0, 1]), (20, 30, [2])]),  # reads stay below max
        ([(0, 50), (5, 10), (0, 50)], 0, 20, [(0, 50, [0, 2, 1])]),  # overlaps and repeats share a read
        ([], 0, 10, []),
    ],
)
def test_coalesce_groups_ranges(ranges: list, gap: int, most: int, want: list) -> None:
    assert coalesce(ranges, gap, most) == want


def test_coalesce_refuses_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_gap must be >= 0"):
        coalesce([(0, 1)], -1)


def _filled(url: str, so: dict[str, Any] | None) -> np.ndarray:
    meta = make_meta()
    store = create_store(url, meta, storage_options=so)
    data = field(meta, "velocity")
    for t in range(NT):
        store.write_box("velocity", t, 0, 0, 0, data[t])
    store.close()
    return data


def _get_count(server: SeaweedS3, at_least: int) -> int:
    """The server's GET count, waiting briefly for it to reach ``at_least`` (it is counted as a reply ends)."""
    deadline = time.monotonic() + 5
    n = server.requests("GET")
    while n < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
        n = server.requests("GET")
    return n


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def location(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, dict[str, Any] | None]:
    if request.param == "local":
        return str(tmp_path / "ds.zarr"), None
    server = request.getfixturevalue("s3_server")
    return f"{request.getfixturevalue('s3_url')}/ds.zarr", server.storage_options


def test_coalesced_reads_are_bit_identical(location: tuple[str, dict[str, Any] | None]) -> None:
    url, so = location
    data = _filled(url, so)
    boxes = [((0, 0, 0), (16, 16, 16)), ((3, 5, 7), (20, 36, 40)), ((-5, 2, -9), (9, 30, 13))]
    got = {}
    for on in (False, True):
        store = open_store(url, storage_options=so)
        store.coalesce = on
        reader = ChunkReader(store, ChunkCache(64 << 20))
        got[on] = [reader.region("velocity", t, lo, hi) for t in range(NT) for lo, hi in boxes]
        got[on, "bytes"] = reader.stats()["bytes_read"]
        got[on, "requests"] = store.requests
        store.close()
    for a, b in zip(got[False], got[True], strict=True):
        np.testing.assert_array_equal(bits(a), bits(b))
    want = np.take(np.take(data[1], np.arange(-5, 9), axis=0, mode="wrap")[:, 2:30], np.arange(-9, 13), axis=2,
                   mode="wrap")
    np.testing.assert_array_equal(bits(got[True][-1]), bits(want))
    assert got[True, "bytes"] == got[False, "bytes"]  # no gap allowed: not one byte more
    assert got[True, "requests"] < got[False, "requests"]


@pytest.mark.s3
@pytest.mark.parametrize("transport", ["obstore", "zarr"])
def test_coalescing_cuts_the_gets_the_server_counts(s3_server: SeaweedS3, s3_url: str, transport: str) -> None:
    url, so = f"{s3_url}/ds.zarr", s3_server.storage_options
    _filled(url, so)
    counts = {}
    for on in (False, True):
        store = open_store(url, storage_options=so)
        assert store.transport == "obstore"  # the default whenever the options allow it
        store.coalesce, store.transport = on, transport
        store.array("velocity")  # its metadata GETs are not chunk reads
        before = _get_count(s3_server, 0)
        store.read_chunks("velocity", 0, [(iz, iy, ix) for iz in range(2) for iy in range(2) for ix in range(2)])
        counts[on] = _get_count(s3_server, before + store.requests) - before
        assert counts[on] == store.requests  # our count is the server's count
        store.close()
    # One shard (16^3) holds these 8 chunks of 8^3: 1 index + 8 chunk GETs, or 1 index + 1 merged GET.
    assert counts == {False: 9, True: 2}


def _chunk_span(url: str, so: dict[str, Any] | None, t: int, chunk: tuple[int, int, int]) -> tuple[str, int, int]:
    """Object path and byte range of one inner chunk of shard (0, 0, 0), read from the shard's own index."""
    fs, root = fsspec.core.url_to_fs(url, **(so or {}))
    path = f"{root}/velocity/c/{t}/0/0/0/0"
    raw = fs.cat_file(path)
    index = np.frombuffer(raw[-(8 * 16 + 4) : -4], dtype="<u8").reshape(2, 2, 2, 2)
    off, n = (int(v) for v in index[chunk])
    return path, off, n


def test_corrupt_chunk_inside_a_merged_read_is_refused(location: tuple[str, dict[str, Any] | None]) -> None:
    url, so = location
    _filled(url, so)
    fs, _ = fsspec.core.url_to_fs(url, **(so or {}))
    target = (1, 0, 1)  # neither the first nor the last chunk of the shard's run
    path, off, n = _chunk_span(url, so, 1, target)
    first = _chunk_span(url, so, 1, (0, 0, 0))[1]
    assert first < off and off + n < len(fs.cat_file(path)) - (8 * 16 + 4)
    raw = bytearray(fs.cat_file(path))
    raw[off + 100 : off + 104] = bytes(b ^ 0xFF for b in raw[off + 100 : off + 104])
    fs.pipe_file(path, bytes(raw))

    store = open_store(url, storage_options=so)
    assert store.coalesce
    reader = ChunkReader(store, ChunkCache(64 << 20))
    with pytest.raises(CorruptData, match=r"time index 1, inner chunk \(iz, iy, ix\)=\(1, 0, 1\)"):
        reader.region("velocity", 1, (0, 0, 0), (16, 16, 16))
    # One merged read plus the index, twice (a failed checksum is retried once with a fresh index).
    assert store.requests == 4
    with pytest.raises(CorruptData, match=r"\(1, 0, 1\)"):
        reader.region("velocity", 1, (9, 1, 9), (12, 3, 12))  # and never cached
    assert reader.region("velocity", 0, (0, 0, 0), (16, 16, 16)).shape == (16, 16, 16, 3)  # t=0 is intact
    store.close()


@pytest.mark.parametrize(
    ("options", "used"),
    [
        ({"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}, True),
        ({"anon": True}, True),
        (None, False),  # botocore's credential chain: s3fs keeps it
        ({"profile": "lab"}, False),
        ({"key": "k", "secret": "s", "config_kwargs": {"signature_version": "s3v4"}}, False),
    ],
)
def test_obstore_reads_only_options_it_can_translate(options: dict[str, Any] | None, used: bool) -> None:
    assert (obstore_reads("s3://bucket/ds.zarr", options) is not None) == used
    assert obstore_reads("memory://bucket/ds.zarr", {"anon": True}) is None


def test_obstore_reads_say_when_the_store_is_unreachable() -> None:
    from labservice.devserver import free_ports
    from labservice.errors import StorageUnavailable

    port = free_ports(1)[0]  # nothing listens there
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 5}}
    reads = obstore_reads("s3://bucket/ds.zarr", options)
    assert reads is not None
    with pytest.raises(StorageUnavailable, match="cannot reach the store"), remote_errors("s3://bucket", "reading"):
        asyncio.run(reads.get_many([("velocity/c/0/0/0/0/0", (0, 10))]))


def test_cache_counts_a_shared_buffer_once_while_any_view_lives() -> None:
    cache = ChunkCache(max_bytes=16 * 4000)
    merged = np.frombuffer(bytes(4000), dtype=np.uint8)  # one coalesced read of four 1000-byte chunks
    views = [merged[i * 1000 : (i + 1) * 1000] for i in range(4)]
    for i, v in enumerate(views):
        cache.put(("chunk", i), v)
    assert cache.nbytes == 4000 and cache.get(("chunk", 2)) is views[2]  # no copy, counted once
    cache.put("own", np.zeros(500, dtype=np.uint8))
    assert cache.nbytes == 4500
    cache.get(("chunk", 3))  # the most recently used now
    cache.resize(4499)  # evicts chunks 0 to 2 (freeing nothing: chunk 3 keeps the buffer), then "own"
    assert len(cache) == 1 and cache.get(("chunk", 3)) is views[3] and cache.nbytes == 4000
    cache.resize(3999)
    assert len(cache) == 0 and cache.nbytes == 0  # the last view gone: the whole buffer is freed


def test_cache_copies_a_view_of_a_buffer_big_for_it() -> None:
    cache = ChunkCache(max_bytes=16 * 1000)
    big = np.frombuffer(bytes(1001 * 16), dtype=np.uint8)  # more than 1/16 of the cache
    cache.put("view", big[:100])
    got = cache.get("view")
    assert got is not None and got.base is None and cache.nbytes == 100
    np.testing.assert_array_equal(got, big[:100])


def test_obstore_reads_travel_to_other_processes_without_their_client() -> None:
    import pickle

    reads = obstore_reads("s3://bucket/ds.zarr", {"anon": True})
    assert reads is not None and reads.store is reads.store  # one client per process
    copy = pickle.loads(pickle.dumps(reads))
    assert copy.config == reads.config and copy._client is None
