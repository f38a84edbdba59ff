"""Branch cutouts through a real server: every node equals the single-halo cutout at its snapshot."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pandas as pd
import pytest

from labclient import InvalidRequest, LimitError

LAST = 7
FIELDS = ("Coordinates", "Velocities", "ParticleIDs", "Offsets")


@pytest.fixture(scope="module")
def catalog(sim_dir):
    return pd.read_parquet(sim_dir / "halos.parquet")


@pytest.fixture(scope="module")
def long_branch(local):
    """The z = 0 halo with the longest main branch (ties: the most massive)."""
    z0 = local.halos[local.halos["snap"] == LAST]
    length = z0["mainLeafId"] - z0["id"] + 1
    hid = int(z0.assign(length=length).sort_values(["length", "mass"], ascending=False)["id"].iloc[0])
    assert int(length.max()) >= 3, "the test simulation has no main branch of 3 nodes; change its seed"
    return hid


@pytest.fixture(scope="module")
def mixed_branch(local):
    """A halo whose main branch has nodes with and without R200c."""
    for hid in local.halos.sort_values("mass", ascending=False)["id"]:
        r200 = local.tree(int(hid), "main-branch")["r200c"].to_numpy()
        if np.isnan(r200).any() and (r200 > 0).any():
            return int(hid)
    pytest.fail("no main branch mixes nodes with and without R200c; change the test simulation's seed")


def _same_node(got: dict, want: dict) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(np.asarray(got[f]), np.asarray(want[f]), err_msg=f)
    assert got["radius"] == pytest.approx(want["radius"])
    np.testing.assert_allclose(got["centre"], want["centre"])


def test_hdf5_nodes_equal_single_halo_cutouts(http, sim, local, long_branch):
    r = http.get(f"/halos/{long_branch}/branch-cutout", params={"radius": 1.5, "units": "mpc"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-hdf5")
    branch = local.tree(long_branch, "main-branch")
    assert int(r.headers["X-Lab-Nodes"]) == len(branch)
    with h5py.File(io.BytesIO(r.content), "r") as f:
        assert f.attrs["n_nodes"] == len(branch) and f.attrs["halo_id"] == long_branch
        assert f["Header"].attrs["BoxSize"] == 50.0
        for row in branch.itertuples():
            group = f[f"snap_{row.snap:03d}"]
            assert group.attrs["id"] == row.id and group.attrs["mass"] == row.mass
            single = sim.halo(row.id).cutout(radius=1.5, units="mpc")  # the single-halo route, over HTTP
            node = {k: group[k][()] for k in FIELDS} | {
                "radius": group.attrs["radius_mpc"],
                "centre": group.attrs["centre"],
            }
            _same_node(node, single)
            assert single["ParticleIDs"].size > 0


def test_msgpack_client(sim, local, long_branch):
    got = sim.halo(long_branch).branch_cutout(radius=1.5, units="mpc", fields=["ParticleIDs"])
    assert [n["snap"] for n in got["nodes"]] == local.tree(long_branch, "main-branch")["snap"].tolist()
    assert got["count"] == sum(n["ParticleIDs"].size for n in got["nodes"]) > 0
    assert "Velocities" not in got["nodes"][0]


def test_r200_nodes_without_r200c(sim, local, mixed_branch):
    # units=r200: each node's sphere scales with its own R200c; nodes without one are refused or skipped.
    with pytest.raises(InvalidRequest) as info:
        sim.halo(mixed_branch).branch_cutout(radius=2, units="r200")
    assert "missing=skip" in info.value.detail and "units=mpc" in info.value.detail
    branch = local.tree(mixed_branch, "main-branch")
    with_r200 = branch[branch["r200c"] > 0]
    skipped = sim.halo(mixed_branch).branch_cutout(radius=2, units="r200", missing="skip")
    assert [n["halo"]["id"] for n in skipped["nodes"]] == with_r200["id"].tolist()
    for node in skipped["nodes"]:
        single = sim.halo(node["halo"]["id"]).cutout(radius=2, units="r200")
        _same_node(node, single)
        assert node["radius"] == pytest.approx(2 * node["halo"]["r200c"])


def test_no_r200_is_a_clear_422(http, catalog):
    bare = catalog[catalog["r200c"].isna()]
    assert len(bare), "every halo of the test run has an R200c; nothing to check"
    hid, snap = int(bare["id"].iloc[0]), int(bare["snap"].iloc[0])
    r = http.get(f"/snapshots/{snap}/halos/{hid}/cutout", params={"radius": 2, "units": "r200"})
    assert r.status_code == 422 and "no R200c" in r.json()["detail"] and "units=mpc" in r.json()["detail"]
    assert http.get(f"/halos/{hid}").json()["halo"]["r200c"] is None  # NaN travels as null in JSON


def test_over_the_limit_says_how_to_submit_a_job(http, sim, long_branch):
    r = http.get(f"/halos/{long_branch}/branch-cutout", params={"radius": 12, "units": "mpc"})
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert "POST /api/v1/jobs" in detail and '"kind": "branch-cutout"' in detail and "job=True" in detail
    with pytest.raises(LimitError):
        sim.halo(long_branch).branch_cutout(radius=12, units="mpc")


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"units": "kpc"}, "mpc"),
        ({"radius": -1}, "radius"),
        ({"fields": "Masses"}, "ParticleIDs"),
        ({"missing": "maybe"}, "skip"),
        ({"format": "npz"}, "hdf5"),
    ],
)
def test_bad_parameters(http, long_branch, params, needle):
    r = http.get(f"/halos/{long_branch}/branch-cutout", params={"units": "mpc", **params})
    assert r.status_code == 422 and needle in r.text


def test_unknown_halo_is_404(http):
    assert http.get("/halos/99999999/branch-cutout", params={"units": "mpc"}).status_code == 404
