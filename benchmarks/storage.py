"""Storage benchmark: ingest rate, region reads through ChunkReader next to raw zarr, point-like access.

Run: ``.venv/bin/python benchmarks/storage.py [--n 256] [--points 2000] [--dir DIR]``

For a n^3 x 3 float32 field (256^3 by default, 201 MB) it prints
- ingest MB/s through ``create_store`` + ``write_box`` (shard by shard, marks written);
- cold (empty chunk cache) and warm region-read MB/s through ``ChunkReader.region``, next to raw
  ``zarr`` reads of the same region in the same run (the peer: stock zarr-python on the same files);
- for a point-like pattern (a 4^3 stencil around each of many random points, as a Lagrange-4
  interpolation needs) the bytes read from storage versus the bytes requested, and the time per point.

"Cold" means our chunk cache is empty; the operating system's page cache is warm after ingest for
both readers alike, so the ratios compare the software paths, not the disk.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from common import best_of

from labservice.storage import ChunkCache, ChunkReader, DatasetMeta, create_store, open_store

MB = 1e6


def make_meta(n: int) -> DatasetMeta:
    return DatasetMeta.model_validate({
        "id": "bench", "title": "storage benchmark",
        "grid": {a: {"size": n, "start": 0.0, "step": 2 * np.pi / n, "periodic": True} for a in "xyz"},
        "times": [0.0], "variables": {"velocity": {"components": ["ux", "uy", "uz"]}},
        "chunks": (32, 32, 32), "shards": (min(n, 256),) * 3,
    })


def ingest(url: str, meta: DatasetMeta, data: np.ndarray) -> float:
    t0 = time.perf_counter()
    store = create_store(url, meta, overwrite=True)
    s = meta.array_shards("velocity")[1]
    n = data.shape[0]
    for z in range(0, n, s):
        for y in range(0, n, s):
            for x in range(0, n, s):
                store.write_box("velocity", 0, z, y, x, data[z : z + s, y : y + s, x : x + s])
                store.mark_shard_done("velocity", 0, (z // s, y // s, x // s))
    store.close()
    return time.perf_counter() - t0


def region_reads(url: str, data: np.ndarray, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> None:
    store = open_store(url)
    nbytes = int(np.prod(np.subtract(hi, lo))) * 3 * 4

    def cold() -> None:
        reader = ChunkReader(store, ChunkCache(1 << 30))
        out = reader.region("velocity", 0, lo, hi)
        assert out.shape[:3] == tuple(np.subtract(hi, lo))

    warm_reader = ChunkReader(store, ChunkCache(1 << 30))
    got = warm_reader.region("velocity", 0, lo, hi)
    assert np.array_equal(got, data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    arr = zarr.open_group(url, mode="r")["velocity"]

    def raw() -> None:
        arr[0, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], :]

    t_cold = best_of(cold)
    t_warm = best_of(lambda: warm_reader.region("velocity", 0, lo, hi), repeat=5)
    t_raw = best_of(raw)
    shape = "x".join(str(b - a) for a, b in zip(lo, hi, strict=True))
    print(f"region {shape} at {lo} ({nbytes / MB:.1f} MB requested):")
    print(f"  labservice cold   {nbytes / MB / t_cold:9.0f} MB/s   ({t_cold * 1e3:7.1f} ms)")
    print(f"  labservice warm   {nbytes / MB / t_warm:9.0f} MB/s   ({t_warm * 1e3:7.1f} ms)")
    print(f"  raw zarr          {nbytes / MB / t_raw:9.0f} MB/s   ({t_raw * 1e3:7.1f} ms)")
    print(f"  ratio cold/raw {t_raw / t_cold:.2f}x, warm/raw {t_raw / t_warm:.2f}x (higher is better)")


def point_pattern(url: str, n: int, npoints: int) -> None:
    store = open_store(url)
    rng = np.random.default_rng(7)
    corners = rng.integers(0, n, size=(npoints, 3)) - 1  # 4-point stencils around random points
    requested = npoints * 4**3 * 3 * 4

    reader = ChunkReader(store, ChunkCache(1 << 30))
    t0 = time.perf_counter()
    for c in corners:
        reader.region("velocity", 0, c, c + 4)
    t_ours = time.perf_counter() - t0
    s = reader.stats()

    # Peer: stock zarr reading the same 4^3 boxes (no wrap-around, so clip to the grid for zarr).
    arr = zarr.open_group(url, mode="r")["velocity"]
    clipped = np.clip(corners, 0, n - 4)
    m = min(npoints, 300)  # zarr is slow per box; time a subset and scale
    t0 = time.perf_counter()
    for c in clipped[:m]:
        arr[0, c[0] : c[0] + 4, c[1] : c[1] + 4, c[2] : c[2] + 4, :]
    t_zarr = (time.perf_counter() - t0) / m * npoints

    touched = {(int(a // 32), int(b // 32), int(c // 32))
               for corner in corners for a in (corner[0] + np.arange(4)) % n
               for b in (corner[1] + np.arange(4)) % n for c in (corner[2] + np.arange(4)) % n}
    floor = len(touched) * 32**3 * 3 * 4
    print(f"point-like access: {npoints} random 4^3 stencils ({requested / MB:.2f} MB requested)")
    print(f"  distinct 32^3 chunks the stencils touch: {len(touched)} = {floor / MB:.1f} MB "
          "(the least any chunked reader must fetch)")
    print(f"  chunks read {s['chunks_read']}, cache hits {s['cache_hits']}, misses {s['cache_misses']}")
    print(f"  bytes read {s['bytes_read'] / MB:.1f} MB = {s['bytes_read'] / requested:.1f}x requested, "
          f"{s['bytes_read'] / floor:.3f}x the touched chunks (the rest: crc32c and shard indexes)")
    print(f"  time per point: labservice {t_ours / npoints * 1e6:.1f} us, raw zarr {t_zarr / npoints * 1e6:.1f} us "
          f"({t_zarr / t_ours:.1f}x)")
    warm = ChunkReader(store, reader.cache)
    t0 = time.perf_counter()
    for c in corners:
        warm.region("velocity", 0, c, c + 4)
    print(f"  warm cache: {(time.perf_counter() - t0) / npoints * 1e6:.1f} us per point, "
          f"bytes read {warm.stats()['bytes_read']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="grid size per axis")
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the dataset (default: a temp dir)")
    args = ap.parse_args()
    n = args.n
    workdir = Path(tempfile.mkdtemp(prefix="labservice-bench-", dir=args.dir))
    try:
        url = str(workdir / "bench.zarr")
        data = np.random.default_rng(0).standard_normal((n, n, n, 3), dtype=np.float32)
        meta = make_meta(n)
        t = ingest(url, meta, data)
        print(f"field {n}^3 x 3 float32 = {data.nbytes / MB:.0f} MB, chunks 32^3, shards {meta.shards[0]}^3")
        print(f"ingest: {data.nbytes / MB / t:.0f} MB/s ({t:.1f} s)")
        raw = zarr.open_group(url, mode="r")["velocity"]
        assert np.array_equal(raw[0, 5, 6, 7], data[5, 6, 7])
        h = n // 4
        region_reads(url, data, (h + 3, h + 5, h + 7), (3 * h + 3, 3 * h + 5, 3 * h + 7))
        region_reads(url, data, (10, 20, 30), (26, 36, 46))
        point_pattern(url, n, args.points)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
