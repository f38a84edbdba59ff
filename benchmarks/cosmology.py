"""Cosmology benchmark: tree queries by depth-first ranges vs pointer walks, Morton sphere cutouts vs brute force.

Usage: python benchmarks/cosmology.py [DATASET_DIR]   (default data/cosmo128; build it with
``python -c "from labservice.datasets.cosmo import build_cosmo; build_cosmo('data', size=128)"``).
Prints p50 latencies and ratios measured in the same run, in process and then through a real server
(one HTTP request per tree vs one per node, as a TNG-API client walks).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from labservice.cutout.particles import ParticleSnapshot
from labservice.datasets.simulation import Simulation
from labservice.datasets.treequery import TreeTable, walk_main_branch, walk_progenitors


def p50(fn, items) -> float:
    times = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(path: Path) -> None:
    halos = pd.read_parquet(path / "halos.parquet")
    tree = TreeTable(halos)
    con = duckdb.connect()
    con.execute("CREATE TABLE halos AS SELECT * FROM read_parquet(?)", [str(path / "halos.parquet")])
    con.execute("CREATE UNIQUE INDEX halos_id ON halos(id)")
    lookup = lambda i: dict(zip(("firstProgenitorId", "nextProgenitorId"), con.execute(  # noqa: E731
        'SELECT "firstProgenitorId", "nextProgenitorId" FROM halos WHERE id = ?', [i]).fetchone()))
    last = halos["snap"].max()
    roots = halos[(halos["snap"] == last)].sort_values("mass", ascending=False)["id"].to_numpy()[:50]
    print(f"dataset {path.name}: {len(halos)} tree nodes, {len(roots)} z=0 halos queried")
    for name, fast, walk in (("main branch", tree.main_branch, walk_main_branch),
                             ("all progenitors", tree.progenitors, walk_progenitors)):
        t_fast = p50(fast, roots)
        t_walk = p50(lambda i: walk(lookup, i), roots)
        sql = "SELECT * FROM halos WHERE id BETWEEN ? AND ?"
        col = "mainLeafId" if name == "main branch" else "lastProgenitorId"
        ends = dict(zip(halos["id"], halos[col]))
        t_sql = p50(lambda i: con.execute(sql, [int(i), int(ends[i])]).fetchall(), roots)
        print(f"{name:16s} p50: id-range {t_fast * 1e3:.3f} ms, one SQL range {t_sql * 1e3:.3f} ms, "
              f"pointer walk (one indexed SQL lookup per node) {t_walk * 1e3:.3f} ms -> {t_walk / t_fast:.0f}x")
    z0 = halos[(halos["snap"] == last) & (halos["r200c"] > 0)]
    snap = ParticleSnapshot(path / "snapshots" / f"{int(last):03d}")
    median_halo = z0.iloc[np.argsort(z0["mass"].to_numpy())[len(z0) // 2]]
    sample = z0.sample(min(30, len(z0)), random_state=0)
    args = [((h.x, h.y, h.z), 2 * h.r200c) for h in sample.itertuples()]
    med = ((median_halo.x, median_halo.y, median_halo.z), 2 * median_halo.r200c)
    t_idx = p50(lambda a: snap.sphere(*a), [med] * 20)
    t_brute = p50(lambda a: snap.brute_sphere(*a), [med] * 5)
    print(f"sphere cutout at 2*R200 of the median halo: Morton index {t_idx * 1e3:.3f} ms, brute force "
          f"{t_brute * 1e3:.2f} ms over {snap.count} particles -> {t_brute / t_idx:.0f}x")
    print(f"sphere cutout p50 over {len(args)} halos: {p50(lambda a: snap.sphere(*a), args) * 1e3:.3f} ms")
    cat = halos[halos["snap"] == last]
    centre, box = np.array([50.0, 50.0, 50.0]), 100.0

    def search(_):
        sel = cat[cat["mass"].to_numpy() > 1e13]
        d = (sel[["x", "y", "z"]].to_numpy() - centre + box / 2) % box - box / 2
        return sel[(d**2).sum(axis=1) < 20.0**2]

    print(f"halo search mass > 1e13 near 20 Mpc/h: p50 {p50(search, range(20)) * 1e3:.3f} ms")
    sim = Simulation(path)
    t_lib = p50(lambda _: sim.search_halos(int(last), {"mass__gt": 1e13}, near=(*centre, 20.0), limit=1000),
                range(20))
    print(f"  same through Simulation.search_halos (filters parsed, paged): p50 {t_lib * 1e3:.3f} ms")
    through_http(path, int(last), roots[:10], sim.box)


def through_http(path: Path, last: int, roots: np.ndarray, box: float) -> None:
    """The same queries through a real server and the client: one request per tree vs one per node."""
    from labservice.settings import Settings

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=path.parent, token_db=Path(tmp) / "tokens.sqlite",
                            public_requests_per_minute=10**6, public_max_concurrent=64)
        _http_queries(settings, path, last, roots, box)


def _http_queries(settings, path: Path, last: int, roots: np.ndarray, box: float) -> None:
    from labclient import Lab
    from labservice.app import create_app
    from labservice.devserver import ServerThread

    with ServerThread(create_app(settings)) as server, Lab(server.url) as lab:
        sim = lab.dataset(path.name)
        http = lab.transport

        def walk(i):  # the TNG-API way: GET each halo, follow firstProgenitorId
            cur = int(i)
            while cur >= 0:
                cur = int(http.call("GET", f"/api/v1/datasets/{path.name}/halos/{cur}", binary=False)
                          ["halo"]["firstProgenitorId"])

        t_one = p50(lambda i: sim.halo(int(i)).main_branch(), roots)
        t_walk = p50(walk, roots)
        print(f"HTTP main branch p50: one request {t_one * 1e3:.2f} ms, one request per node "
              f"{t_walk * 1e3:.1f} ms -> {t_walk / t_one:.0f}x")
        t_search = p50(lambda _: sim.halos(last, mass__gt=1e13, near=(box / 2, box / 2, box / 2, 20.0)), range(20))
        print(f"HTTP halo search mass > 1e13 near= p50 {t_search * 1e3:.2f} ms")
        t_cut = p50(lambda i: sim.halo(int(i)).cutout(radius=2, units="r200"), roots)
        print(f"HTTP particle cutout 2*R200 p50 over {len(roots)} massive halos: {t_cut * 1e3:.2f} ms")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/cosmo128"))
