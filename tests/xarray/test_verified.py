"""The zarr view serves shard bytes as stored, bit for bit, and only after their checksums pass: a range
that touches a damaged inner chunk or index is refused, every other range still served."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr

from labservice import open_dataset
from labservice.devserver import ServerThread
from labservice.errors import CorruptData
from labservice.storage import raw_chunks, zarr_view
from labservice.tokens import TokenStore
from tests.plugin.stack import make_settings

KEY = "velocity/c/1/0/0/0/0"  # periodic16: one 16^3 shard per time, eight 8^3 inner chunks


def _index(raw: bytes, nchunks: int = 8) -> np.ndarray:
    return np.frombuffer(raw[-(nchunks * 16 + 4) : -4], dtype="<u8").reshape(nchunks, 2)


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 4] = bytes(b ^ 0xFF for b in raw[offset : offset + 4])
    path.write_bytes(bytes(raw))


@pytest.fixture
def damaged(sample_urls: dict[str, str], tmp_path: Path) -> Path:
    """A copy of periodic16 whose shard KEY has inner chunk entry 5 damaged and whose shard at time 2 has
    a damaged index."""
    root = tmp_path / "damaged.zarr"
    shutil.copytree(sample_urls["periodic16"], root)
    offset, _ = (int(v) for v in _index((root / KEY).read_bytes())[5])
    _flip(root / KEY, offset + 40)
    _flip(root / "velocity/c/2/0/0/0/0", (root / "velocity/c/2/0/0/0/0").stat().st_size - 40)
    return root


@pytest.fixture
def damaged_server(damaged: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    (tmp_path / "work").mkdir()
    settings = make_settings({"damaged": str(damaged)}, tmp_path / "work")
    from labservice.app import create_app
    from labservice.limits import Limits

    token = TokenStore(settings.token_db_path()).create("big", Limits(max_cutout_bytes=1 << 30))[1]
    with ServerThread(create_app(settings)) as server:
        yield f"{server.url}/api/v1/datasets/damaged/zarr/", token


def test_view_bytes_are_the_stored_bytes(
    server: ServerThread, new_token: Callable[..., str], sample_urls: dict[str, str]
) -> None:
    # Every kind of range, twice (the second from the page cache, on the event loop): bit for bit the file.
    raw = (Path(sample_urls["periodic16"]) / KEY).read_bytes()
    index = _index(raw)
    o, n = (int(v) for v in index[3])
    ranges = [None, f"bytes={o}-{o + n - 1}", f"bytes={o + 7}-{o + n + 100}", "bytes=-132", "bytes=0-0",
              f"bytes={len(raw) - 200}-", f"bytes=100-{len(raw) - 1}"]
    url = f"{server.url}/api/v1/datasets/periodic16/zarr/{KEY}"
    token = new_token(max_cutout_bytes=1 << 30)
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for _ in range(2):
            for rng in ranges:
                r = c.get(url, headers={"Range": rng} if rng else {})
                assert r.status_code == (206 if rng else 200), (rng, r.text)
                span = r.headers.get("content-range", f"bytes 0-{len(raw) - 1}/{len(raw)}").split()[1]
                first, last = span.split("/")[0].split("-")
                assert r.content == raw[int(first) : int(last) + 1], rng


def test_inline_and_thread_reads_agree(sample_urls: dict[str, str]) -> None:
    # read_now (page cache, no thread) and read (a worker thread) give the same bytes as the file.
    ds = open_dataset(sample_urls["periodic16"])
    raw = (Path(sample_urls["periodic16"]) / KEY).read_bytes()
    obj = zarr_view.lookup(ds, KEY)
    assert zarr_view.lookup_now(ds, KEY) == obj and zarr_view.lookup_now(ds, "zarr.json") is None
    for start, stop in [(0, len(raw)), (5, 900), (len(raw) - 132, len(raw)), (1000, 1001)]:
        slow = zarr_view.read(ds, obj, start, stop)
        fast = zarr_view.read_now(ds, obj, start, stop)
        assert bytes(slow) == bytes(fast) == raw[start:stop]
    ds.close()


def test_damaged_chunk_and_index_are_never_served(damaged: Path, damaged_server: tuple[str, str]) -> None:
    url, token = damaged_server
    raw = (damaged / KEY).read_bytes()
    index = _index(raw)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for _ in range(2):  # from disk through a thread, then from the page cache inline
            o5, n5 = (int(v) for v in index[5])
            bad = [None, f"bytes={o5}-{o5 + 10}", f"bytes={o5 - 1}-{o5 + n5}"]
            for rng in bad:
                r = c.get(KEY, headers={"Range": rng} if rng else {})
                assert r.status_code == 500, (rng, r.status_code)
                body = r.json()
                assert body["code"] == "corrupt_data" and "(iz, iy, ix)=(1, 0, 1)" in body["detail"], body
            # the other chunks of the same shard, and its index, are served bit for bit
            for entry in (0, 4, 7):
                o, n = (int(v) for v in index[entry])
                r = c.get(KEY, headers={"Range": f"bytes={o}-{o + n - 1}"})
                assert r.status_code == 206 and r.content == raw[o : o + n]
            assert c.get(KEY, headers={"Range": "bytes=-132"}).content == raw[-132:]
            # a damaged index: nothing of its shard is served, not even a chunk that is intact
            r = c.get("velocity/c/2/0/0/0/0", headers={"Range": "bytes=0-99"})
            assert r.status_code == 500 and "index" in r.json()["detail"]
            assert c.get("velocity/c/0/0/0/0/0").status_code == 200
    # stock xarray: slices away from the damage read fine, a slice through it fails
    opts = {"client_kwargs": {"headers": {"Authorization": f"Bearer {token}"}}}
    ds = xr.open_zarr(url, storage_options=opts)
    want = open_dataset(str(damaged)).store.read_box("velocity", 1, slice(0, 8), slice(0, 16), slice(0, 16))
    assert np.array_equal(ds["velocity"].isel(time=1, z=slice(0, 8)).values, want)
    with pytest.raises(Exception, match="500"):
        _ = ds["velocity"].isel(time=1, z=slice(8, 16)).values


def test_shard_layout_knows_only_checksummed_chains(sample_urls: dict[str, str]) -> None:
    doc = json.loads((Path(sample_urls["periodic16"]) / "velocity/zarr.json").read_text())
    layout = raw_chunks.shard_layout(doc)
    assert layout is not None and layout.per == (1, 2, 2, 2, 1) and layout.index_nbytes == 8 * 16 + 4
    inner = doc["codecs"][0]["configuration"]
    inner["codecs"] = inner["codecs"][:1]  # no crc32c: nothing this module can check
    assert raw_chunks.shard_layout(doc) is None
    raw = (Path(sample_urls["periodic16"]) / KEY).read_bytes()
    index = raw_chunks.parse_index(layout, raw[-layout.index_nbytes :])
    assert index is not None and sorted(index.entries) == list(range(8))
    assert index.starts == sorted(index.starts) and index.starts[0] == 0
    damaged = bytearray(raw[-layout.index_nbytes :])
    damaged[3] ^= 1
    assert raw_chunks.parse_index(layout, bytes(damaged)) is None
    # a range that cuts a chunk: the whole chunk is read and checked
    reads = []

    def read(a: int, b: int) -> bytes:
        reads.append((a, b))
        return raw[a:b]

    a, b = index.starts[2], index.ends[2]
    raw_chunks.verify_span(layout, index, len(raw), a + 10, memoryview(raw)[a + 10 : b - 10], read)
    assert reads == [(a, b)]
    bad = bytearray(raw)
    bad[a + 20] ^= 1
    with pytest.raises(raw_chunks.DamagedShard) as exc:
        raw_chunks.verify_span(layout, index, len(raw), 0, memoryview(bytes(bad)), read)
    assert exc.value.chunk == index.entries[2]


def test_read_raises_corrupt_data_on_both_paths(damaged: Path) -> None:
    ds = open_dataset(str(damaged))
    obj = zarr_view.lookup(ds, KEY)
    with pytest.raises(CorruptData, match="inner chunk"):
        zarr_view.read(ds, obj, 0, obj.size)
    with pytest.raises(CorruptData, match="inner chunk"):
        zarr_view.read_now(ds, obj, 0, obj.size)
    ds.close()


def test_remote_store_reads_are_checked_too(sample_urls: dict[str, str]) -> None:
    # A store that is not a local folder (memory:// here; S3 takes the same path): ranged gets, same checks.
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    url = f"memory://view-{uuid.uuid4().hex}"
    src = Path(sample_urls["periodic16"])
    for f in src.rglob("*"):
        if f.is_file():
            fs.pipe_file(f"{url}/{f.relative_to(src)}", f.read_bytes())
    ds = open_dataset(url)
    raw = (src / KEY).read_bytes()
    obj = zarr_view.lookup(ds, KEY)
    assert obj.path is None and obj.size == len(raw) and zarr_view.lookup_now(ds, KEY) is None
    assert zarr_view.read_now(ds, obj, 0, 10) is None  # remote: always through a thread
    for start, stop in [(0, len(raw)), (5, 900), (len(raw) - 132, len(raw))]:
        assert bytes(zarr_view.read(ds, obj, start, stop)) == raw[start:stop]
    index = _index(raw)
    o, n = (int(v) for v in index[6])
    bad = bytearray(raw)
    bad[o + 3] ^= 0xFF
    fs.pipe_file(f"{url}/{KEY}", bytes(bad))
    with pytest.raises(CorruptData, match=r"inner chunk \(iz, iy, ix\)=\(1, 1, 0\)"):
        zarr_view.read(ds, obj, o, o + n)
    assert bytes(zarr_view.read(ds, obj, 0, int(index[0][1]))) == raw[: int(index[0][1])]
    ds.close()
    fs.rm(url, recursive=True)


def test_index_bytes_served_are_checked_even_when_cached(
    sample_urls: dict[str, str], tmp_path: Path
) -> None:
    # The parsed index is cached by (size, mtime, inode); bytes of the index that go out are still checked.
    import os

    root = tmp_path / "p16.zarr"
    shutil.copytree(sample_urls["periodic16"], root)
    ds = open_dataset(str(root))
    obj = zarr_view.lookup(ds, KEY)
    o, n = (int(v) for v in _index((root / KEY).read_bytes())[0])
    good = bytes(zarr_view.read(ds, obj, o, o + n))  # caches the index
    st = os.stat(root / KEY)
    with open(root / KEY, "r+b") as f:  # damage the index in place, same size, same mtime, same inode
        f.seek(obj.size - 50)
        f.write(b"\xff\xfe")
    os.utime(root / KEY, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert zarr_view.lookup(ds, KEY) == obj
    for read in (zarr_view.read, zarr_view.read_now):
        with pytest.raises(CorruptData, match="index"):
            read(ds, obj, obj.size - 132, obj.size)
    assert bytes(zarr_view.read(ds, obj, o, o + n)) == good  # the chunk itself is intact
    ds.close()


def test_shard_rewritten_between_lookup_and_read_is_retryable(
    sample_urls: dict[str, str], tmp_path: Path
) -> None:
    # A re-ingest replaces a shard (new inode): the old answer's size and index no longer hold, so the read
    # is a 503 to retry, never a false corrupt_data or bytes of the new file under the old ETag.
    import os

    from labservice.errors import StorageUnavailable

    root = tmp_path / "p16.zarr"
    shutil.copytree(sample_urls["periodic16"], root)
    ds = open_dataset(str(root))
    obj = zarr_view.lookup(ds, KEY)
    new = root / (KEY + ".new")
    new.write_bytes((root / KEY).read_bytes())
    os.replace(new, root / KEY)
    for read in (zarr_view.read, zarr_view.read_now):
        with pytest.raises(StorageUnavailable, match="rewritten"):
            read(ds, obj, 0, 100)
    fresh = zarr_view.lookup(ds, KEY)
    assert fresh.etag != obj.etag or fresh.stamp != obj.stamp
    assert bytes(zarr_view.read(ds, fresh, 0, 100)) == (root / KEY).read_bytes()[:100]
    ds.close()
