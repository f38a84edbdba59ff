"""Cutout throughput: labservice's chunk-wise reader against raw zarr reads, and per-format encoding.

Prints, for a synthetic N^3 x 3 float32 zarr dataset (default N=128, 32^3 chunks, 128^3 shards):
- a full cutout (cold cache) next to a raw ``zarr`` read of the same region (``zarr.open_group``);
- a stride-4 cutout next to giverny's approach (read at full resolution, then stride) -- time and
  stored bytes read;
- encoding throughput (MB/s of cutout data) for every output format.

Usage: ``.venv/bin/python benchmarks/cutout.py [--n 128] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import zarr
from common import best_of

from labservice.cutout import encode_cutout, read_cutout
from labservice.storage import ChunkCache, ChunkReader, create_store, open_store
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable


def build(path: Path, n: int) -> None:
    step = 2 * np.pi / n
    axis = Axis(size=n, periodic=True, start=0.0, step=step)
    meta = DatasetMeta(
        id="bench",
        title="synthetic",
        grid=Grid(x=axis, y=axis, z=axis),
        times=[0.0],
        variables={"velocity": Variable(components=["ux", "uy", "uz"], units="m/s")},
        chunks=(32, 32, 32),
        shards=(128, 128, 128),
    )
    store = create_store(str(path), meta)
    rng = np.random.default_rng(0)
    for z0 in range(0, n, 32):
        store.write_box("velocity", 0, z0, 0, 0, rng.standard_normal((32, n, n, 3)).astype(np.float32))
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, repeat = args.n, args.repeat
    with tempfile.TemporaryDirectory(prefix="bench-cutout-") as tmp:
        path = Path(tmp) / "bench.zarr"
        build(path, n)
        mb = n**3 * 3 * 4 / 1e6
        store = open_store(str(path))

        def fresh() -> ChunkReader:
            return ChunkReader(store, cache=ChunkCache(1 << 30))

        raw = best_of(lambda: np.asarray(zarr.open_group(str(path), mode="r")["velocity"][0]), repeat)
        ours = best_of(lambda: read_cutout(fresh(), "velocity", 0), repeat)
        print(f"full {n}^3 x 3 cutout ({mb:.1f} MB), cold cache:")
        print(f"  raw zarr read      {mb / raw:8.1f} MB/s")
        print(f"  labservice cutout  {mb / ours:8.1f} MB/s   {raw / ours:.2f}x the raw read's speed")

        s = 4
        strided = best_of(
            lambda: read_cutout(fresh(), "velocity", 0, x=f"::{s}", y=f"::{s}", z=f"::{s}"), repeat
        )
        giverny = best_of(
            lambda: np.asarray(zarr.open_group(str(path), mode="r")["velocity"][0])[::s, ::s, ::s], repeat
        )
        full_reader = fresh()
        read_cutout(full_reader, "velocity", 0)
        print(f"stride {s} on every axis (32^3 chunks, so every chunk still holds selected points):")
        print(f"  read-then-stride   {giverny * 1e3:8.1f} ms")
        print(f"  labservice cutout  {strided * 1e3:8.1f} ms   speed-up {giverny / strided:.2f}x")
        s = 64
        reader = fresh()
        t64 = best_of(lambda: read_cutout(fresh(), "velocity", 0, x=f"::{s}", y=f"::{s}", z=f"::{s}"), repeat)
        read_cutout(reader, "velocity", 0, x=f"::{s}", y=f"::{s}", z=f"::{s}")
        print(f"stride {s} (> chunk size, whole chunks skipped):")
        got, full = reader.stats(), full_reader.stats()
        print(
            f"  labservice cutout  {t64 * 1e3:8.1f} ms, {got['chunks_read']} chunks, "
            f"{got['bytes_read'] / 1e6:.2f} MB read vs {full['bytes_read'] / 1e6:.2f} MB for the full read; "
            f"read-then-stride {giverny * 1e3:.1f} ms -> speed-up {giverny / t64:.1f}x"
        )

        cut = read_cutout(fresh(), "velocity", 0)
        print(f"encoding the {mb:.1f} MB cutout (MB/s of data):")
        for fmt in ("npy", "msgpack", "hdf5", "zip", "netcdf", "zarr"):
            dt = best_of(lambda fmt=fmt: encode_cutout(cut, fmt), repeat)
            print(f"  {fmt:8s} {mb / dt:8.1f} MB/s")


if __name__ == "__main__":
    main()
