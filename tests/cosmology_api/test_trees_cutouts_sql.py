"""Trees, mergers, particle cutouts and SQL through a real server, checked against the library and brute force."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pandas as pd
import pytest

from labclient import InvalidRequest, LimitError
from labservice.datasets.treequery import KINDS, TreeTable
from labservice.storage.particles import ParticleSnapshot

LAST = 7


@pytest.fixture(scope="module")
def table(sim_dir):
    return TreeTable(pd.read_parquet(sim_dir / "halos.parquet"))


@pytest.fixture(scope="module")
def merged(table):
    """A z = 0 halo with at least one merger on its main branch."""
    for hid in table.halos.loc[table.halos["snap"] == LAST, "id"]:
        if len(table.mergers(int(hid))):
            return int(hid)
    pytest.fail("the test simulation has no merger at all; change its seed")


@pytest.mark.parametrize("kind", KINDS)
def test_tree_kinds_equal_tree_table(sim, table, merged, kind):
    for hid in (merged, 0, int(table.halos["id"].iloc[-1])):
        got = sim.halo(hid).tree(kind)
        want = table.tree(hid, kind)
        assert got["id"].tolist() == want["id"].tolist()
        np.testing.assert_array_equal(got["mass"].to_numpy(), want["mass"].to_numpy())


def test_tree_helpers_snap_and_fields(sim, table, merged):
    halo = sim.halo(merged)
    assert halo.main_branch()["id"].tolist() == table.main_branch(merged)["id"].tolist()
    progs = halo.progenitors(snap=LAST - 1, fields=["mass", "snap"])
    assert progs.columns.tolist() == ["id", "mass", "snap"]
    assert progs["id"].tolist() == table.progenitors(merged, snap=LAST - 1)["id"].tolist()
    assert len(progs) >= 2  # a merger leaves two progenitors one snapshot back


def test_mergers(sim, table, merged):
    got = sim.halo(merged).mergers(min_ratio=0.2)
    want = table.mergers(merged, 0.2)
    assert len(got) >= 1
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)
    desc_mass = table.halos.set_index("id").loc[got["descendantId"], "mass"].to_numpy()
    assert np.all(got["secondary_mass"].to_numpy() >= 0.2 * desc_mass)
    assert len(sim.halo(merged).mergers(min_ratio=1.0)) <= len(got)
    with pytest.raises(InvalidRequest):
        sim.halo(merged).mergers(min_ratio=0)


def _brute(sim_dir, halo, radius, fields=None):
    snap = ParticleSnapshot(sim_dir / "snapshots" / f"{int(halo['snap']):03d}")
    return snap.brute_sphere((halo["x"], halo["y"], halo["z"]), radius, fields)


@pytest.mark.parametrize("radius,units", [(2.0, "r200"), (3.5, "mpc")])
def test_cutout_equals_brute_force(sim, sim_dir, table, radius, units):
    halos = table.halos[(table.halos["snap"] == LAST) & (table.halos["r200c"] > 0)]
    halo = halos.iloc[0]
    got = sim.halo(int(halo["id"])).cutout(radius=radius, units=units)
    r = radius * halo["r200c"] if units == "r200" else radius
    want = _brute(sim_dir, halo, r)
    assert got["ParticleIDs"].size > 0 and got["radius"] == pytest.approx(r)
    order, ref = np.argsort(got["ParticleIDs"]), np.argsort(want["ParticleIDs"])
    np.testing.assert_array_equal(got["ParticleIDs"][order], want["ParticleIDs"][ref])
    np.testing.assert_array_equal(got["Velocities"][order], want["Velocities"][ref])
    assert np.all(np.linalg.norm(got["Offsets"], axis=1) <= r + 1e-4)


def test_cutout_hdf5_and_limits(http, sim, sim_dir, table):
    halo = table.halos[table.halos["snap"] == LAST].iloc[1]
    hid = int(halo["id"])
    r = http.get(f"/snapshots/{LAST}/halos/{hid}/cutout",
                 params={"radius": 2.5, "units": "mpc", "fields": "ParticleIDs"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-hdf5")
    with h5py.File(io.BytesIO(r.content), "r") as f:
        ids = f["PartType1/ParticleIDs"][:]
        assert f["Header"].attrs["BoxSize"] == 50.0 and "Velocities" not in f["PartType1"]
    assert sorted(ids.tolist()) == sorted(_brute(sim_dir, halo, 2.5, ["ParticleIDs"])["ParticleIDs"].tolist())
    big = http.get(f"/snapshots/{LAST}/halos/{hid}/cutout", params={"radius": 15, "units": "mpc"})
    assert big.status_code == 413 and "smaller radius" in big.json()["detail"]
    with pytest.raises(InvalidRequest) as info:
        sim.halo(hid).cutout(fields=["Masses"])
    assert "Coordinates" in info.value.detail
    with pytest.raises(LimitError):
        sim.halo(hid).cutout(radius=15, units="mpc")


def test_sql(sim, table):
    got = sim.sql("SELECT snap, count(*) AS n FROM halos GROUP BY snap ORDER BY snap")
    want = table.halos.groupby("snap").size()
    assert got["snap"].tolist() == want.index.tolist() and got["n"].tolist() == want.tolist()
    assert got.attrs["truncated"] is False
    hid = int(table.halos["id"].iloc[0])
    progs = sim.sql(f"SELECT p.id FROM halos d JOIN halos p ON p.id BETWEEN d.id AND d.lastProgenitorId "
                    f"WHERE d.id = {hid} ORDER BY p.id")
    assert progs["id"].tolist() == table.progenitors(hid)["id"].tolist()


@pytest.mark.parametrize("query,needle", [
    ("SELECT * FROM read_csv('/etc/passwd')", "disabled"),
    ("ATTACH '/tmp/other.duckdb' AS other", "only SELECT"),
    ("INSTALL httpfs", "only SELECT"),
    ("COPY halos TO '/tmp/halos.csv'", "only SELECT"),
    ("SET enable_external_access = true", "only SELECT"),
    ("SELECT 1; SELECT 2", "exactly one"),
    ("SELEC id FROM halos", "SQL"),
])
def test_sql_forbidden(sim, query, needle):
    with pytest.raises(InvalidRequest) as info:
        sim.sql(query)
    assert info.value.status == 422 and needle in info.value.detail
