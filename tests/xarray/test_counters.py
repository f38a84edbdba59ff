"""Server counters: a slice read with stock xarray fetches only the shard ranges its chunk grid implies."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

INDEX_ENTRY = 16  # (offset, nbytes) as two uint64 per inner chunk
CRC = 4  # the crc32c after the index


def _touched(sel: slice, size: int, chunk: int) -> range:
    start, stop, _ = sel.indices(size)
    return range(start // chunk, (stop - 1) // chunk + 1)


def expected_reads(
    root: Path, variable: str, selection: tuple[slice, ...], per_chunk: bool
) -> list[tuple[str, int, int]]:
    """(key, start, stop) that zarr's sharding codec must read for ``selection``, from the stored layout.

    A zarr read that needs every inner chunk of a shard reads it whole; otherwise it reads the shard's
    index (a suffix range), then one range per needed inner chunk, located through that index. With
    ``per_chunk`` every inner chunk is its own zarr read, as when dask's chunks are the inner chunks.
    """
    doc = json.loads((root / variable / "zarr.json").read_text())
    shape = doc["shape"]
    shard = doc["chunk_grid"]["configuration"]["chunk_shape"]
    inner = doc["codecs"][0]["configuration"]["chunk_shape"]
    per_shard = [s // c for s, c in zip(shard, inner, strict=True)]
    # global inner-chunk coordinates touched, grouped by shard
    wanted: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
    grids = [_touched(s, n, c) for s, n, c in zip(selection, shape, inner, strict=True)]
    for coords in itertools.product(*grids):
        shard_idx = tuple(c // p for c, p in zip(coords, per_shard, strict=True))
        wanted.setdefault(shard_idx, set()).add(tuple(c % p for c, p in zip(coords, per_shard, strict=True)))
    if per_chunk:
        calls = [(shard_idx, {c}) for shard_idx, local in wanted.items() for c in local]
    else:
        calls = list(wanted.items())
    reads = []
    nchunks = int(np.prod(per_shard))
    for shard_idx, local in calls:
        key = f"{variable}/c/" + "/".join(map(str, shard_idx))
        raw = (root / key).read_bytes()
        if len(local) == nchunks:
            reads.append((key, 0, len(raw)))
            continue
        index_len = nchunks * INDEX_ENTRY + CRC
        reads.append((key, len(raw) - index_len, len(raw)))
        index = np.frombuffer(raw[-index_len:-CRC], dtype="<u8").reshape(*per_shard, 2)
        for c in local:
            offset, nbytes = (int(v) for v in index[c])
            reads.append((key, offset, offset + nbytes))
    return sorted(reads)


def _reads(report: dict) -> list[tuple[str, int, int]]:
    return sorted((r["key"], r["start"], r["stop"]) for r in report["you"]["recent_reads"])


@pytest.mark.parametrize("opener", ["open_zarr", "engine"])
@pytest.mark.parametrize(
    ("dataset", "variable", "isel"),
    [
        # inside one periodic16 shard (16^3, inner chunks 8^3): the index and two inner chunks
        ("periodic16", "velocity", {"time": 2, "z": slice(0, 4), "y": slice(0, 4), "x": slice(4, 12)}),
        # every inner chunk of one shard: the whole shard in one zarr read, or chunk by chunk with dask
        ("periodic16", "pressure", {"time": 3}),
        # two isotropic64 shards (one per time), a quarter of each
        ("isotropic64", "velocity", {"time": slice(5, 7), "z": slice(30, 34), "y": slice(0, 20)}),
    ],
)
def test_slice_fetches_only_needed_ranges(
    opener: str,
    dataset: str,
    variable: str,
    isel: dict,
    view_url: Callable[[str], str],
    new_token: Callable[..., str],
    stats: Callable[..., dict],
    served_data: dict[str, str],
    hostport: str,
) -> None:
    token = new_token()  # a fresh caller, so its read history holds only this test's reads
    if opener == "open_zarr":  # stock xarray + dask: one zarr read per dask chunk (= inner chunk)
        ds = xr.open_zarr(
            view_url(dataset),
            storage_options={"client_kwargs": {"headers": {"Authorization": f"Bearer {token}"}}},
        )
    else:  # the engine without dask: one zarr read for the whole selection
        ds = xr.open_dataset(f"labservice://{hostport}/{dataset}", engine="labservice", token=token)
    before = stats(dataset)
    assert _reads(stats(dataset, token)) == []  # opening read metadata and coordinates only
    got = ds[variable].isel(isel).values
    root = Path(served_data[dataset])
    dims = ds[variable].dims
    selection = tuple(
        slice(isel[d], isel[d] + 1) if isinstance(isel.get(d), int) else isel.get(d, slice(None))
        for d in dims
    )
    if opener == "open_zarr":
        inner = json.loads((root / variable / "zarr.json").read_text())["codecs"][0]["configuration"]
        assert ds[variable].data.chunksize == tuple(inner["chunk_shape"])
    want = expected_reads(root, variable, selection, per_chunk=opener == "open_zarr")
    after = stats(dataset, token)
    reads = _reads(after)
    assert reads == want
    served = sum(b - a for _, a, b in reads)
    assert after["you"]["bytes_served"] == served
    assert after["data_requests"] - before["data_requests"] == len(reads)
    assert after["data_bytes"] - before["data_bytes"] == served
    assert got.shape == ds[variable].isel(isel).shape and np.isfinite(got).all()
