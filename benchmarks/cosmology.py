"""Cosmology benchmark: tree queries by depth-first ranges vs pointer walks, Morton cutouts vs brute force.

Usage::

    python benchmarks/cosmology.py [DATASET_DIR] [--build]

DATASET_DIR defaults to /tmp/cosmo128. ``--build`` first builds the benchmark run there if it is missing
(128^3 particles, 100 Mpc/h, 80 outputs from z = 3 to 0, so that the trees have about 10^5 nodes; about
10 minutes on a quiet 2-core machine)::

    build_cosmo("/tmp", size=128, n_snapshots=80, z_first=3.0)

which is also what ``labservice demo build --data /tmp --size 128 --only cosmo`` builds.

Prints, in one run and measured against each other: p50 latencies of main-branch and all-progenitor queries
(id ranges) next to the one-lookup-per-node pointer walk (target >= 100x); the particle sphere at 2*R200 of
the median halo through the Morton index next to a brute-force scan of every particle (target >= 50x); the
halo search with a mass cut and near= through the halo Morton index next to a scan of the snapshot; branch
cutouts; and the same queries through a real server.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from labservice.datasets.branch import branch_cutout
from labservice.datasets.simulation import Simulation
from labservice.datasets.treequery import TreeTable, walk_main_branch, walk_progenitors

DEFAULT = Path("/tmp/cosmo128")


def p50(fn, items) -> float:
    times = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def trees(path: Path, halos: pd.DataFrame, roots: np.ndarray) -> None:
    tree = TreeTable(halos)
    con = duckdb.connect()
    con.execute("CREATE TABLE halos AS SELECT * FROM read_parquet(?)", [str(path / "halos.parquet")])
    con.execute("CREATE UNIQUE INDEX halos_id ON halos(id)")

    def lookup(i: int) -> dict:  # one indexed lookup per node, as a client following pointers does
        row = con.execute(
            'SELECT "firstProgenitorId", "nextProgenitorId" FROM halos WHERE id = ?', [i]
        ).fetchone()
        return {"firstProgenitorId": row[0], "nextProgenitorId": row[1]}

    for name, fast, walk, col in (
        ("main branch", tree.main_branch, walk_main_branch, "mainLeafId"),
        ("all progenitors", tree.progenitors, walk_progenitors, "lastProgenitorId"),
    ):
        sizes = [len(fast(i)) for i in roots]
        t_fast = p50(fast, roots)
        t_walk = p50(lambda i, w=walk: w(lookup, i), roots)
        ends = dict(zip(halos["id"], halos[col], strict=True))
        t_sql = p50(
            lambda i, e=ends: con.execute(
                "SELECT * FROM halos WHERE id BETWEEN ? AND ?", [int(i), int(e[i])]
            ).fetchall(),
            roots,
        )
        print(
            f"{name:16s} p50 ({np.median(sizes):.0f} nodes): id range {t_fast * 1e3:.3f} ms, one SQL range "
            f"{t_sql * 1e3:.3f} ms, pointer walk (one indexed lookup per node) {t_walk * 1e3:.2f} ms "
            f"-> {t_walk / t_fast:.0f}x (target >= 100x)"
        )


def spheres(sim: Simulation, halos: pd.DataFrame, last: int) -> None:
    z0 = halos[(halos["snap"] == last) & (halos["r200c"] > 0)]
    snap = sim.particles(last)
    median_halo = z0.iloc[np.argsort(z0["mass"].to_numpy())[len(z0) // 2]]
    med = ((median_halo.x, median_halo.y, median_halo.z), 2 * median_halo.r200c)
    got, ref = snap.sphere(*med, ["ParticleIDs"]), snap.brute_sphere(*med, ["ParticleIDs"])
    assert np.array_equal(np.sort(got["ParticleIDs"]), np.sort(ref["ParticleIDs"]))
    t_idx = p50(lambda a: snap.sphere(*a), [med] * 30)
    t_brute = p50(lambda a: snap.brute_sphere(*a), [med] * 5)
    print(
        f"sphere at 2*R200 of the median halo ({median_halo.n_particles} particles in FOF, "
        f"{got['ParticleIDs'].size} in the sphere): Morton index {t_idx * 1e3:.3f} ms, brute force "
        f"{t_brute * 1e3:.1f} ms over {snap.count} particles -> {t_brute / t_idx:.0f}x (target >= 50x)"
    )
    sample = z0.sample(min(30, len(z0)), random_state=0)
    args = [((h.x, h.y, h.z), 2 * h.r200c) for h in sample.itertuples()]
    print(
        f"sphere at 2*R200 p50 over {len(args)} random z=0 halos: {p50(lambda a: snap.sphere(*a), args) * 1e3:.3f} ms"
        f"; {np.mean(np.isnan(halos['r200c'])):.0%} of all halos have no R200c (never reach 200 rho_crit)"
    )


def search(sim: Simulation, halos: pd.DataFrame, last: int) -> None:
    cat = halos[halos["snap"] == last]
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, sim.box, (30, 3))
    radius, mass = 10.0, 1e13

    xyz, masses = halos[["x", "y", "z"]].to_numpy(), halos["mass"].to_numpy()
    all_rows = np.flatnonzero(halos["snap"].to_numpy() == last)

    def select(c, rows):  # the exact test, on the given candidate rows
        d = (xyz[rows] - c + sim.box / 2) % sim.box - sim.box / 2
        return rows[((d**2).sum(axis=1) <= radius**2) & (masses[rows] > mass)]

    def indexed(c):
        return select(c, sim.index.sphere_rows(last, c, radius))

    pages = [sim.search_halos(last, {"mass__gt": mass}, near=(*c, radius), limit=10_000) for c in centres]
    for page, c in zip(pages, centres, strict=True):
        assert (
            page.frame["id"].tolist()
            == halos["id"].to_numpy()[select(c, all_rows)].tolist()
            == halos["id"].to_numpy()[indexed(c)].tolist()
        )
    t_idx, t_scan = p50(indexed, centres), p50(lambda c: select(c, all_rows), centres)
    t_lib = p50(
        lambda c: sim.search_halos(last, {"mass__gt": mass}, near=(*c, radius), limit=10_000), centres
    )
    print(
        f"halo search mass > {mass:.0e} near= r={radius:g} Mpc/h: selection p50 through the halo Morton index "
        f"{t_idx * 1e3:.3f} ms (examines {np.median([p.examined for p in pages]):.0f} of {len(cat)} rows, "
        f"{np.median([p.total for p in pages]):.0f} match) vs scan of the snapshot {t_scan * 1e3:.3f} ms "
        f"-> {t_scan / t_idx:.1f}x; whole Simulation.search_halos (parse, filter, sort, page) {t_lib * 1e3:.2f} ms"
    )


def search_scaling(box: float, n: int = 1_000_000, radius: float = 10.0) -> None:
    """Where the halo index pays: one synthetic snapshot of ``n`` halos (a Millennium snapshot holds ~10^7)."""
    from labservice.datasets.haloindex import HaloIndex

    rng = np.random.default_rng(2)
    xyz = rng.uniform(0, box, (n, 3))
    index = HaloIndex(np.zeros(n, dtype=np.int64), xyz, box)
    centres = rng.uniform(0, box, (20, 3))

    def exact(c, rows):
        d = (xyz[rows] - c + box / 2) % box - box / 2
        return rows[(d**2).sum(axis=1) <= radius**2]

    every = np.arange(n)
    for c in centres[:3]:
        assert np.array_equal(exact(c, index.sphere_rows(0, c, radius)), exact(c, every))
    t_idx = p50(lambda c: exact(c, index.sphere_rows(0, c, radius)), centres)
    t_scan = p50(lambda c: exact(c, every), centres)
    print(
        f"  synthetic snapshot of {n:.0e} halos, near= r={radius:g}: index {t_idx * 1e3:.2f} ms vs scan "
        f"{t_scan * 1e3:.1f} ms -> {t_scan / t_idx:.0f}x (the index pays once a snapshot holds ~10^4 halos)"
    )


def branches(sim: Simulation, roots: np.ndarray) -> None:
    def one(i):
        return branch_cutout(sim, int(i), 2.0, "r200", ["Coordinates", "ParticleIDs"], missing="skip")

    sizes = [(len(r["nodes"]), sum(n["ParticleIDs"].size for n in r["nodes"])) for r in map(one, roots)]
    t = p50(one, roots)
    print(
        f"branch cutout at 2*R200 (nodes with R200c) p50 over {len(roots)} massive z=0 halos: {t * 1e3:.1f} ms "
        f"for a median {np.median([s[0] for s in sizes]):.0f} nodes and {np.median([s[1] for s in sizes]):.0f} "
        "particles"
    )


def through_http(path: Path, last: int, roots: np.ndarray, box: float) -> None:
    """The same queries through a real server and the client: one request per tree vs one per node."""
    from labclient import Lab
    from labservice.app import create_app
    from labservice.devserver import ServerThread
    from labservice.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=path.parent,
            token_db=Path(tmp) / "tokens.sqlite",
            public_requests_per_minute=10**6,
            public_max_concurrent=64,
            public_max_cutout_bytes=256 << 20,
        )
        with ServerThread(create_app(settings)) as server, Lab(server.url) as lab:
            sim = lab.dataset(path.name)
            http = lab.transport

            def walk(i):  # the TNG-API way: GET each halo, follow firstProgenitorId
                cur = int(i)
                while cur >= 0:
                    cur = int(
                        http.call("GET", f"/api/v1/datasets/{path.name}/halos/{cur}", binary=False)["halo"][
                            "firstProgenitorId"
                        ]
                    )

            t_one = p50(lambda i: sim.halo(int(i)).main_branch(), roots)
            t_walk = p50(walk, roots)
            print(
                f"HTTP main branch p50: one request {t_one * 1e3:.2f} ms, one request per node "
                f"{t_walk * 1e3:.1f} ms -> {t_walk / t_one:.0f}x"
            )
            t_search = p50(
                lambda _: sim.halos(last, mass__gt=1e13, near=(box / 2, box / 2, box / 2, 10.0)), range(20)
            )
            print(f"HTTP halo search mass > 1e13 near= p50 {t_search * 1e3:.2f} ms")
            t_cut = p50(lambda i: sim.halo(int(i)).cutout(radius=2, units="r200"), roots)
            print(f"HTTP particle cutout 2*R200 p50 over {len(roots)} massive halos: {t_cut * 1e3:.2f} ms")
            t_branch = p50(
                lambda i: sim.halo(int(i)).branch_cutout(
                    radius=2, units="r200", missing="skip", fields=["Coordinates", "ParticleIDs"]
                ),
                roots,
            )
            print(
                f"HTTP branch cutout 2*R200 p50 over {len(roots)} massive halos: {t_branch * 1e3:.1f} ms (one "
                "request for every node)"
            )


def main(path: Path) -> None:
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures are depressed when high)"
    )
    sim = Simulation(path)
    halos = sim.halos
    last = int(halos["snap"].max())
    roots = halos[halos["snap"] == last].sort_values("mass", ascending=False)["id"].to_numpy()[:50]
    n_snaps = len(sim.info["snapshots"])
    print(
        f"dataset {path.name}: {sim.info['n_particles']} particles, {n_snaps} snapshots, {len(halos)} tree nodes"
        f" ({'>=' if len(halos) >= 1e5 else 'under'} 1e5), {len(roots)} most massive z=0 halos queried"
    )
    trees(path, halos, roots)
    spheres(sim, halos, last)
    search(sim, halos, last)
    search_scaling(sim.box)
    branches(sim, roots[:10])
    through_http(path, last, roots[:10], sim.box)
    sim.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    target = Path(args[0]) if args else DEFAULT
    if "--build" in sys.argv and not (target / "simulation.json").exists():
        from labservice.datasets.demo.build import build_cosmo

        started = time.perf_counter()
        build_cosmo(target.parent, size=128, n_snapshots=80, z_first=3.0, name=target.name)
        print(f"built {target} in {time.perf_counter() - started:.0f} s")
    main(target)
