"""Listing, snapshots and halo search through the client and raw HTTP, checked against the stored catalog."""

from __future__ import annotations

import io
import itertools

import msgpack
import numpy as np
import pandas as pd
import pytest

from labclient import InvalidRequest, NotFoundError
from labclient.cosmology import RemoteSimulation
from tests.plugin.cosmo import SIM

LAST = 7  # z = 0


@pytest.fixture(scope="module")
def catalog(sim_dir):
    return pd.read_parquet(sim_dir / "halos.parquet")


def test_listing_and_open(lab, sim, local):
    listed = {d["id"]: d for d in lab.datasets()}
    assert listed[SIM]["kind"] == "cosmology"
    assert listed[SIM]["n_halos"] == len(local.halos)
    assert f"{SIM}-density" in listed  # the density field is served as a field dataset too
    assert isinstance(sim, RemoteSimulation) and sim.box == 50.0
    assert "mass" in sim.columns


def test_snapshots(sim, sim_dir, catalog):
    snaps = sim.snapshots()
    assert snaps["snap"].tolist() == list(range(8))
    np.testing.assert_allclose(snaps["redshift"], 1 / snaps["a"] - 1, rtol=1e-12, atol=1e-12)
    counts = catalog.groupby("snap").size().reindex(range(8), fill_value=0)
    assert snaps["n_halos"].tolist() == counts.tolist()
    # Cosmic time grows with a, and today's age of this LCDM (h=0.7, Om=0.3) is about 13.47 Gyr.
    assert np.all(np.diff(snaps["time"]) > 0)
    assert snaps["time"].iloc[-1] == pytest.approx(13.47, abs=0.02)


def test_filters_order_and_paging(sim, catalog):
    z0 = catalog[catalog["snap"] == LAST]
    want = z0[(z0["mass"] > 2e13) & (z0["n_particles"] <= 200)].sort_values("mass", ascending=False)
    assert len(want) >= 3
    got = sim.halos(LAST, mass__gt=2e13, n_particles__le=200, order_by="-mass")
    assert got["id"].tolist() == want["id"].tolist()
    np.testing.assert_array_equal(got["mass"].to_numpy(), want["mass"].to_numpy())
    page = sim.halos(LAST, mass__gt=2e13, n_particles__le=200, order_by="-mass", limit=2, offset=1,
                     fields=["mass"])
    assert page.columns.tolist() == ["id", "mass"]
    assert page["id"].tolist() == want["id"].tolist()[1:3]
    assert sim.halos(LAST, fof_rank=0)["id"].tolist() == z0[z0["fof_rank"] == 0]["id"].tolist()


def _brute_distance(pos: np.ndarray, centre: np.ndarray, box: float) -> np.ndarray:
    # Nearest of the 27 periodic images: independent of the server's minimum-image formula.
    shifts = np.array(list(itertools.product((-box, 0.0, box), repeat=3)))
    images = pos[:, None, :] + shifts[None, :, :]
    return np.sqrt(((images - centre) ** 2).sum(axis=2)).min(axis=1)


def test_near_is_periodic(sim, catalog):
    z0 = catalog[catalog["snap"] == LAST]
    pos = z0[["x", "y", "z"]].to_numpy()
    # 18 Mpc/h past the halo with the largest coordinate: across the box edge from it, 18 away periodically.
    row, axis = np.unravel_index(np.argmax(pos), pos.shape)
    centre, radius = pos[row].copy(), 20.0
    centre[axis] = (centre[axis] + 18.0) % 50.0
    dist = _brute_distance(pos, centre, 50.0)
    want = z0["id"].to_numpy()[dist <= radius]
    wrapped = np.sqrt(((pos - centre) ** 2).sum(axis=1)) > radius
    assert len(want) >= 2 and np.any(wrapped[dist <= radius])  # some hits only through the wrap
    got = sim.halos(LAST, near=(*centre, radius), order_by="distance", limit=1000)
    assert sorted(got["id"].tolist()) == sorted(want.tolist())
    np.testing.assert_allclose(got["distance"], np.sort(dist[dist <= radius]), rtol=1e-9)


def test_box_is_periodic(sim, catalog):
    z0 = catalog[catalog["snap"] == LAST]
    lo, hi = np.array([40.0, -10.0, 0.0]), np.array([60.0, 25.0, 50.0])
    pos = z0[["x", "y", "z"]].to_numpy()
    inside = np.all([((pos[:, d] >= lo[d]) & (pos[:, d] < hi[d])) | ((pos[:, d] + 50 >= lo[d]) & (pos[:, d] + 50 < hi[d]))
                     | ((pos[:, d] - 50 >= lo[d]) & (pos[:, d] - 50 < hi[d])) for d in range(3)], axis=0)
    assert inside.sum() >= 2
    got = sim.halos(LAST, box=(*lo, *hi), limit=1000)
    assert sorted(got["id"].tolist()) == sorted(z0["id"].to_numpy()[inside].tolist())


@pytest.mark.parametrize("path,params", [
    ("/snapshots/7/halos", {"mass__gt": "1e13", "order_by": "-mass", "limit": "7"}),
    ("/halos/0/tree", {"kind": "full"}),
    ("/snapshots", {}),
])
def test_formats_agree(http, path, params):
    as_json = http.get(path, params={**params, "format": "json"})
    assert as_json.status_code == 200, as_json.text
    ref = pd.DataFrame(as_json.json()["rows"], columns=as_json.json()["columns"])
    assert len(ref) > 0
    by_accept = {
        "text/csv": lambda r: pd.read_csv(io.StringIO(r.text)),
        "application/vnd.apache.parquet": lambda r: pd.read_parquet(io.BytesIO(r.content)),
        "application/msgpack": lambda r: pd.DataFrame(
            {c: np.frombuffer(v["data"], v["dtype"]) if isinstance(v, dict) else v
             for c, v in msgpack.unpackb(r.content)["data"].items()}),
    }
    for accept, decode in by_accept.items():
        r = http.get(path, params=params, headers={"Accept": accept})
        assert r.status_code == 200 and accept in r.headers["content-type"]
        pd.testing.assert_frame_equal(decode(r).reset_index(drop=True), ref, check_dtype=False)


def test_halo_with_links(http, catalog):
    row = catalog[catalog["snap"] == LAST].iloc[0]
    r = http.get(f"/snapshots/{LAST}/halos/{int(row['id'])}")
    assert r.status_code == 200
    body = r.json()
    assert body["halo"]["mass"] == pytest.approx(row["mass"])
    assert body["links"]["main_branch"].endswith(f"/halos/{int(row['id'])}/tree?kind=main-branch")
    assert "cutout" in body["links"]


@pytest.mark.parametrize("call,error,needle", [
    (lambda s: s.halos(LAST, mas__gt=1), InvalidRequest, "Did you mean 'mass'"),
    (lambda s: s.halos(LAST, mass__gtt=1), InvalidRequest, "__gt"),
    (lambda s: s.halos(LAST, order_by="-mas"), InvalidRequest, "Did you mean 'mass'"),
    (lambda s: s.halos(LAST, fields=["r200"]), InvalidRequest, "r200c"),
    (lambda s: s.halos(LAST, limt=3), InvalidRequest, "'limit'"),
    (lambda s: s.halos(LAST, near=(1, 2, 3)), InvalidRequest, "x,y,z,r"),
    (lambda s: s.halos(LAST, limit=10**6), InvalidRequest, "limit"),
    (lambda s: s.halos(99), NotFoundError, "snapshots run from 0 to 7"),
    (lambda s: s.halo(10**6).main_branch(), NotFoundError, "ids run from 0"),
])
def test_errors_say_what_to_change(sim, call, error, needle):
    with pytest.raises(error) as info:
        call(sim)
    assert needle in info.value.detail


def test_unknown_simulation_and_wrong_snapshot(lab, http, catalog):
    with pytest.raises(NotFoundError) as info:
        lab.dataset("apisimm")
    assert f"Did you mean '{SIM}'" in info.value.detail
    r = http.get(str(http.base_url).rstrip("/").replace(SIM, "isotropic") + "/snapshots")
    assert r.status_code == 404 and SIM in r.json()["detail"]
    halo = catalog[catalog["snap"] == LAST].iloc[0]
    r = http.get(f"/snapshots/{LAST - 1}/halos/{int(halo['id'])}")
    assert r.status_code == 404 and f"snapshot {LAST}" in r.json()["detail"]
    r = http.get("/snapshots", params={"format": "xml"})
    assert r.status_code == 422 and "csv" in r.json()["detail"]
