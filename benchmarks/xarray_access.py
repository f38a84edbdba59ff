"""Reading a 128^3 x 3 region: stock ``xr.open_zarr`` over HTTP vs the cutout endpoint vs a local zarr read.

Builds a 128^3 x 3 float32 periodic dataset (inner chunks 32^3, one 128^3 shard per time; the helper of
benchmarks/interpolation.py) in ``--data`` (reused afterwards), serves it with
``labservice.devserver.ServerThread`` (uvicorn in a thread of this process, so client and server share one
interpreter) and prints MB/s, best of ``--repeat`` warm runs, for:

1. ``xr.open_zarr(<zarr view>)`` + ``.values`` with its default ``chunks={}`` (dask, one task per inner
   chunk, each fetching the shard index and its chunk) and with ``chunks="auto"`` (one task per shard);
2. ``xr.open_dataset(..., engine="labservice")`` without dask (one zarr read: the whole shard in one GET);
3. the cutout endpoint, ``format=npy`` streamed, and ``format=msgpack`` decoded by labclient;
4. a local zarr read of the same region (the ceiling), with every figure also as a ratio to it.

    .venv/bin/python benchmarks/xarray_access.py [--size 128] [--repeat 3] [--data /tmp/labservice-xarray-bench]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from common import build


def best(repeat: int, fn: Callable[[], np.ndarray], want: np.ndarray) -> float:
    """Seconds of the fastest of ``repeat`` runs after one warm-up; checks every answer."""
    assert np.array_equal(np.asarray(fn()).reshape(want.shape), want)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - t0)
        assert np.asarray(got).size == want.size
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="grid size n of the n^3 x 3 region")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/tmp/labservice-xarray-bench"))
    args = parser.parse_args()

    import xarray as xr
    import zarr

    from labclient import Lab
    from labservice.app import create_app
    from labservice.devserver import ServerThread
    from labservice.limits import Limits
    from labservice.settings import Settings
    from labservice.tokens import TokenStore

    n = args.size
    path = args.data / f"bench{n}.zarr"
    t0 = time.perf_counter()
    build(path, n)
    print(f"dataset {path} ready in {time.perf_counter() - t0:.1f} s")
    tokens = TokenStore(args.data / "tokens.sqlite")
    _, token = tokens.create(
        "xarray-bench",
        Limits(
            points_per_request=1 << 20,
            max_cutout_bytes=1 << 30,
            requests_per_minute=10**6,
            max_concurrent=64,
            bytes_per_minute=1 << 40,
            zarr_max_concurrent=64,
            zarr_requests_per_minute=10**7,
        ),
    )
    settings = Settings(
        datasets={"bench": str(path)}, token_db=args.data / "tokens.sqlite", cache_bytes=1 << 30
    )
    local = zarr.open_array(str(path / "velocity"), mode="r")
    want = local[0]
    mb = want.nbytes / 1e6
    auth = {"Authorization": f"Bearer {token}"}

    with ServerThread(create_app(settings)) as server, httpx.Client(timeout=600, headers=auth) as http:
        view = f"{server.url}/api/v1/datasets/bench/zarr/"
        hostport = f"{server.host}:{server.port}"
        stock = xr.open_zarr(view, storage_options={"client_kwargs": {"headers": auth}})
        auto = xr.open_zarr(view, storage_options={"client_kwargs": {"headers": auth}}, chunks="auto")
        engine = xr.open_dataset(f"labservice://{hostport}/bench", engine="labservice", token=token)
        lab = Lab(server.url, token=token)
        remote = lab.dataset("bench")
        region = {"x": f"0:{n}", "y": f"0:{n}", "z": f"0:{n}", "variable": "velocity", "time": "0.0"}

        def cutout_npy() -> np.ndarray:
            r = http.get(f"{server.url}/api/v1/datasets/bench/cutout", params={**region, "format": "npy"})
            r.raise_for_status()
            import io

            return np.load(io.BytesIO(r.content))

        runs = {
            "xr.open_zarr(http), dask": lambda: stock["velocity"].isel(time=0).values,
            "xr.open_zarr(http, chunks='auto')": lambda: auto["velocity"].isel(time=0).values,
            "engine=labservice, no dask": lambda: engine["velocity"].isel(time=0).values,
            "cutout endpoint, npy": cutout_npy,
            "cutout endpoint, msgpack (labclient)": lambda: remote.cutout(
                "velocity", 0.0, (0, n), (0, n), (0, n), as_numpy=True
            )["data"],
            "local zarr read": lambda: local[0],
        }
        seconds = {name: best(args.repeat, fn, want) for name, fn in runs.items()}
        lab.close()

    print(f"\nreading {n}^3 x 3 float32 ({mb:.1f} MB), best of {args.repeat} warm runs:")
    base = seconds["local zarr read"]
    for name, s in seconds.items():
        print(f"  {name:38s} {mb / s:9.1f} MB/s  ({s:.3f} s)  {base / s:6.2f} x local zarr")
    for name in ("xr.open_zarr(http), dask", "xr.open_zarr(http, chunks='auto')"):
        print(f"  {name} / cutout npy speed: {seconds['cutout endpoint, npy'] / seconds[name]:6.2f}")


if __name__ == "__main__":
    main()
