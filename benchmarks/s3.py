"""Cold reads from object storage: SeaweedFS S3 on loopback, next to the raw GET ceiling and local disk.

Run: ``.venv/bin/python benchmarks/s3.py [--n 256] [--points 100000] [--clustered 1000000]``

It starts SeaweedFS the way the tests do (``tests/plugin/s3.py``'s ``SeaweedS3``), writes one n^3 x 3
float32 field (chunks 32^3, shards 128^3) to S3 and to local disk, and prints, each with the same-run peer:

- a 128^3 x 3 cutout through ``ChunkReader.region`` from S3 with an empty chunk cache, next to the best raw
  read of the same shard bytes (parallel ranged GETs, s3fs and obstore, concurrency 10 like our path);
- 10^5 random lag4 points, cold, from S3 and from local disk: points/s and bytes read per point;
- 10^6 lag4 points in one 32^3 region, cold, from S3 and local disk;
- GETs per cutout and per point query, counted by SeaweedFS itself (``SeaweedFS_s3_request_total``);
- each S3 figure with shard-read coalescing off and on (``ZarrStore.coalesce``), and the CPU seconds our
  process and the SeaweedFS process spent on it (both share the machine's cores);
- A/B: our chunk reads through obstore (``storage/obstore_reads.py``, the default) or through zarr's
  ``FsspecStore`` (s3fs), and zarr's Rust codec pipeline (``zarrs``) against zarr's own for a stock ``zarr``
  read of the cutout.

"Cold" means a new store (no cached shard indexes) and a new, empty chunk cache for every timed call. The
page cache of SeaweedFS's volume files and of the local copy stays warm (the machine's RAM holds them), so
the figures compare request paths, not disks.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from ceilings import best, line, load, measure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the SeaweedFS launcher the tests use lives in tests/plugin/s3.py

from labservice.interpolation.engine import evaluate_points  # noqa: E402
from labservice.storage import ChunkCache, ChunkReader, DatasetMeta, create_store, open_store  # noqa: E402
from labservice.storage.zarr_ import ZarrStore  # noqa: E402
from tests.plugin.s3 import SeaweedS3  # noqa: E402

MB = 1e6
CONCURRENCY = 10  # aiobotocore's default connection pool, which bounds our path's parallel GETs
BUCKET = "labservice"


def make_meta(n: int) -> DatasetMeta:
    return DatasetMeta.model_validate({
        "id": "s3bench", "title": "S3 benchmark",
        "grid": {a: {"size": n, "start": 0.0, "step": 2 * np.pi / n, "periodic": True} for a in "xyz"},
        "times": [0.0], "variables": {"velocity": {"components": ["ux", "uy", "uz"]}},
        "chunks": (32, 32, 32), "shards": (min(n, 128),) * 3,
    })


def write(url: str, meta: DatasetMeta, data: np.ndarray, so: dict[str, Any] | None) -> float:
    t0 = time.perf_counter()
    store = create_store(url, meta, storage_options=so, overwrite=True)
    s = meta.shards[0]
    for z in range(0, data.shape[0], s):
        for y in range(0, data.shape[1], s):
            for x in range(0, data.shape[2], s):
                store.write_box("velocity", 0, z, y, x, data[z : z + s, y : y + s, x : x + s])
    store.close()
    return time.perf_counter() - t0


class Run:
    """The two copies of the dataset, the server, and how to open a cold store on either."""

    def __init__(self, server: SeaweedS3, s3_url: str, local_url: str) -> None:
        self.server, self.s3_url, self.local_url = server, s3_url, local_url

    def store(self, where: str, coalesce: bool = True, transport: str = "obstore") -> ZarrStore:
        if where == "local":
            store = open_store(self.local_url)
        else:
            store = open_store(self.s3_url, storage_options=self.server.storage_options)
            assert store.transport == "obstore"  # type: ignore[attr-defined]
            store.transport = "zarr" if transport == "s3fs" else transport  # type: ignore[attr-defined]
        store.coalesce = coalesce  # type: ignore[attr-defined]
        store.array("velocity")  # metadata GETs are not part of a read
        return store  # type: ignore[return-value]

    def timed(self, where: str, fn, coalesce: bool = True, transport: str = "obstore", repeat: int = 3) -> dict[str, Any]:
        """Best of ``repeat`` cold calls of ``fn(reader)``; GETs and bytes of the last one."""
        out: dict[str, Any] = {"t": float("inf")}
        for _ in range(repeat):
            store = self.store(where, coalesce, transport)
            reader = ChunkReader(store, ChunkCache(2 << 30))
            before = self.server.requests("GET") if where == "s3" else 0
            cpu0, weed0 = time.process_time(), weed_cpu(self.server)
            t0 = time.perf_counter()
            out["value"] = fn(reader)
            t = time.perf_counter() - t0
            if t < out["t"]:  # CPU seconds of the best call: ours, and the S3 server's (same 2 cores)
                out["t"], out["cpu"] = t, (time.process_time() - cpu0, weed_cpu(self.server) - weed0)
            out["requests"] = store.requests
            out["bytes"] = reader.stats()["bytes_read"]
            if where == "s3":
                out["server_gets"] = server_gets(self.server, before + store.requests) - before
            store.close()
        return out


def weed_cpu(server: SeaweedS3) -> float:
    import psutil

    c = psutil.Process(server.proc.pid).cpu_times()  # type: ignore[union-attr]
    return c.user + c.system


def cpu_text(r: dict[str, Any]) -> str:
    return f"   CPU ours {r['cpu'][0]:.2f} s, weed {r['cpu'][1]:.2f} s, wall {r['t']:.2f} s"


def server_gets(server: SeaweedS3, at_least: int) -> int:
    deadline = time.monotonic() + 5  # the server counts a GET as its reply ends
    n = server.requests("GET")
    while n < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
        n = server.requests("GET")
    return n


def obstore_s3(server: SeaweedS3, bucket: str, prefix: str | None = None) -> Any:
    from obstore.store import S3Store

    so = server.storage_options
    return S3Store(bucket, prefix=prefix, endpoint=server.endpoint, access_key_id=so["key"],
                   secret_access_key=so["secret"], region="us-east-1", virtual_hosted_style_request=False,
                   client_options={"allow_http": True})


# -- the raw ceiling ---------------------------------------------------------------------------------
def shard_spans(run: Run, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> list[tuple[str, int, int]]:
    """The (object key, start, stop) byte runs a cutout's chunks occupy, merged per shard object."""
    store = run.store("s3")
    seen: list[tuple[str, Any]] = []
    inner = store._get_ranges

    def recording(requests: list[tuple[str, Any]]) -> list[bytes | None]:
        seen.extend(requests)
        return inner(requests)

    store._get_ranges = recording  # type: ignore[method-assign]
    ChunkReader(store, ChunkCache(1 << 30)).region("velocity", 0, lo, hi)
    store.close()
    runs: list[tuple[str, int, int]] = []
    for key, rng in sorted(seen, key=lambda r: (r[0], str(r[1]))):
        if rng[0] == "suffix":
            continue
        if runs and runs[-1][0] == key and runs[-1][2] == rng[0]:
            runs[-1] = (key, runs[-1][1], rng[1])
        else:
            runs.append((key, rng[0], rng[1]))
    return runs


def pieces(spans: list[tuple[str, int, int]], size: int) -> list[tuple[str, int, int]]:
    return [(k, a, min(a + size, b)) for k, s, b in spans for a in range(s, b, size)]


def raw_s3fs(fs: Any, parts: list[tuple[str, int, int]], prefix: str) -> int:
    got = fs.cat_ranges([f"{prefix}/{k}" for k, _, _ in parts], [a for _, a, _ in parts], [b for _, _, b in parts])
    return sum(len(g) for g in got)


def raw_obstore(store: Any, parts: list[tuple[str, int, int]], prefix: str) -> int:
    import obstore

    async def all_parts() -> int:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(k: str, a: int, b: int) -> int:
            async with gate:
                return len(await obstore.get_range_async(store, f"{prefix}/{k}", start=a, end=b))

        return sum(await asyncio.gather(*(one(*p) for p in parts)))

    return asyncio.run(all_parts())


def ceilings(run: Run, spans: list[tuple[str, int, int]]) -> dict[str, tuple[float, str]]:
    """Per client (s3fs, obstore): seconds of its best raw parallel read of ``spans``, and how."""
    import s3fs

    bucket, prefix = run.s3_url.removeprefix("s3://").split("/", 1)
    ob = obstore_s3(run.server, bucket)
    fs = s3fs.S3FileSystem(**run.server.storage_options)
    total = sum(b - a for _, a, b in spans)
    results: dict[str, tuple[float, str]] = {}
    for size in (2 << 20, 8 << 20):
        parts = pieces(spans, size)
        for name, fn in (("s3fs", lambda p=parts: raw_s3fs(fs, p, f"{bucket}/{prefix}")),
                         ("obstore", lambda p=parts: raw_obstore(ob, p, prefix))):
            assert fn() == total
            got = (best(fn, 3), f"{len(parts)} GETs of <= {size >> 20} MiB")
            results[name] = min(results.get(name, got), got)
    return results


# -- figures -----------------------------------------------------------------------------------------
def cutout(run: Run, n: int, data: np.ndarray) -> None:
    e = min(128, n)
    for lo in ((0, 0, 0), (16, 16, 16)):
        hi = tuple(a + e for a in lo)
        want = np.take(np.take(np.take(data, np.arange(lo[0], hi[0]), 0, mode="wrap"),
                               np.arange(lo[1], hi[1]), 1, mode="wrap"), np.arange(lo[2], hi[2]), 2, mode="wrap")
        nbytes = want.nbytes
        spans = shard_spans(run, lo, hi)
        raw = ceilings(run, spans)
        t_raw = min(t for t, _ in raw.values())
        shard_bytes = sum(b - a for _, a, b in spans)
        print(f"cutout {e}^3 x 3 at {lo}: {nbytes / MB:.1f} MB delivered, {shard_bytes / MB:.1f} MB of shard bytes")
        for name, (t, how) in raw.items():
            print(line(f"ceiling: raw {name} GETs ({how})", shard_bytes / t)
                  + f"   {nbytes / t / MB:.0f} MB/s per delivered byte")
        for transport in ("s3fs", "obstore"):
            for on in (False, True):
                r = run.timed("s3", lambda rd, lo=lo, hi=hi: rd.region("velocity", 0, lo, hi), on, transport)
                assert np.array_equal(r["value"], want)
                label = f"S3 cold, {transport}, coalesce {'on' if on else 'off'}"
                print(line(label, nbytes / r["t"], nbytes / t_raw, "best raw")
                      + f"   {raw[transport][0] / r['t']:.2f} of raw {transport}"
                      + f"   GETs {r['requests']} (server {r['server_gets']})" + cpu_text(r))
        r = run.timed("local", lambda rd, lo=lo, hi=hi: rd.region("velocity", 0, lo, hi))
        print(line("local disk cold (page cache warm)", nbytes / r["t"]) + f"   reads {r['requests']}")


def points(run: Run, name: str, pts: np.ndarray, transports: tuple[str, ...] = ("s3fs", "obstore")) -> None:
    def query(rd: ChunkReader) -> np.ndarray:
        return np.asarray(evaluate_points(rd, "velocity", 0, pts, "lag4").values)

    local = run.timed("local", query, repeat=2)
    rate_local = len(pts) / local["t"]
    print(f"{name}: {len(pts)} lag4 points")
    print(f"  local disk cold              {rate_local / 1e6:7.2f} M points/s   "
          f"{local['bytes'] / len(pts):9.0f} B read/point   reads {local['requests']}" + cpu_text(local))
    for transport in transports:
        for on in (False, True):
            r = run.timed("s3", query, on, transport, repeat=2)
            assert np.array_equal(r["value"], local["value"], equal_nan=True)
            rate = len(pts) / r["t"]
            print(f"  S3 {transport:7s} coalesce {'on ' if on else 'off'}   {rate / 1e6:7.2f} M points/s   "
                  f"{r['bytes'] / len(pts):9.0f} B read/point   GETs {r['requests']} (server {r['server_gets']})"
                  f"   {rate / rate_local:5.2f} of local" + cpu_text(r))


def zarrs_ab(run: Run, n: int) -> None:
    """Stock zarr reads of the cutout with zarr's Python codec pipeline and with zarrs (Rust)."""
    e = min(128, n)
    index = (0, slice(16, 16 + e), slice(16, 16 + e), slice(16, 16 + e), slice(None))
    nbytes = e**3 * 3 * 4
    pipelines = {"zarr (Python)": "zarr.core.codec_pipeline.BatchedCodecPipeline",
                 "zarrs (Rust)": "zarrs.ZarrsCodecPipeline"}
    print(f"stock zarr read of a {e}^3 x 3 box at 16 (zarr opens the array anew each call: cold):")
    ref = None
    for name, path in pipelines.items():
        with zarr.config.set({"codec_pipeline.path": path}):
            for where, url, so in (("local", run.local_url, None), ("S3", run.s3_url, run.server.storage_options)):
                def read(url: str = url, so: Any = so) -> np.ndarray:
                    return zarr.open_group(url, mode="r", storage_options=so)["velocity"][index]

                got = read()
                ref = got if ref is None else ref
                assert np.array_equal(got, ref)
                print(line(f"{name}, {where}", nbytes / best(read, 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="grid size per axis")
    ap.add_argument("--points", type=int, default=100_000, help="random points over the domain")
    ap.add_argument("--clustered", type=int, default=1_000_000, help="points inside one 32^3 region")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the data (default: a temp dir)")
    args = ap.parse_args()
    n = args.n
    workdir = Path(tempfile.mkdtemp(prefix="labservice-s3bench-", dir=args.dir))
    server = SeaweedS3(workdir / "weed")
    try:
        print(load())
        c = measure(256 << 20)
        print(line("ceiling: loopback TCP socket pair", c["socket"]))
        print(line("ceiling: memcpy", c["memcpy"]))
        server.start(BUCKET)
        meta = make_meta(n)
        data = np.random.default_rng(0).standard_normal((n, n, n, 3), dtype=np.float32)
        run = Run(server, f"s3://{BUCKET}/bench/s3bench.zarr", str(workdir / "s3bench.zarr"))
        t_s3 = write(run.s3_url, meta, data, server.storage_options)
        t_local = write(run.local_url, meta, data, None)
        print(f"field {n}^3 x 3 float32 = {data.nbytes / MB:.0f} MB, chunks 32^3, shards {meta.shards[0]}^3; "
              f"written to S3 at {data.nbytes / MB / t_s3:.0f} MB/s, to local disk at {data.nbytes / MB / t_local:.0f} MB/s")
        rng = np.random.default_rng(1)
        h = 2 * np.pi / n
        warm = rng.uniform(0, 2 * np.pi, (1000, 3))
        evaluate_points(ChunkReader(open_store(run.local_url), ChunkCache(1 << 30)), "velocity", 0, warm, "lag4")
        print(load())
        cutout(run, n, data)
        print(load())
        points(run, "random over the domain", rng.uniform(0, 2 * np.pi, (args.points, 3)))
        corner = min(100, n - 32)
        clustered = (corner + rng.uniform(0, 32, (args.clustered, 3))) * h
        points(run, f"clustered in the 32^3 node box at {corner}", clustered)
        print(load())
        zarrs_ab(run, n)
        print(load())
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
