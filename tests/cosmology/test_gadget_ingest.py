"""Gadget files as a Gadget-4 user reads them, SWIFT files read alike, and the ingested dataset's pieces."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd

from labservice.datasets.ingest.gadget import read_snapshot, write_swift_snapshot
from labservice.storage import open_store
from labservice.storage.particles import ParticleSnapshot


def test_gadget_snapshot_reads_like_gadget4(small_sim):
    path = small_sim / "gadget" / "snap_007.hdf5"
    with h5py.File(path, "r") as f:
        hdr = f["Header"].attrs
        n = int(hdr["NumPart_Total"][1])
        assert n == 32**3 and int(hdr["NumPart_ThisFile"][1]) == n and hdr["NumFilesPerSnapshot"] == 1
        assert hdr["Time"] == 1.0 and abs(hdr["Redshift"]) < 1e-12 and hdr["BoxSize"] == 50.0
        assert hdr["MassTable"][1] > 0 and hdr["Omega0"] == 0.3 and hdr["HubbleParam"] == 0.7
        assert f["Parameters"].attrs["UnitLength_in_cm"] == 3.085678e24
        pos, vel, ids = (f["PartType1"][k][...] for k in ("Coordinates", "Velocities", "ParticleIDs"))
    assert pos.shape == (n, 3) and pos.dtype == np.float32 and vel.shape == (n, 3)
    assert ids.dtype == np.uint64 and np.array_equal(np.sort(ids), np.arange(1, n + 1))
    assert pos.min() >= 0 and pos.max() < 50.0


def test_swift_snapshot_reads_the_same(small_sim, tmp_path):
    gadget = read_snapshot(small_sim / "gadget" / "snap_005.hdf5")
    swift = read_snapshot(write_swift_snapshot(tmp_path / "swift.hdf5", gadget))
    assert swift.source == "swift" and gadget.source == "gadget"
    np.testing.assert_allclose(swift.pos, gadget.pos, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(swift.vel, gadget.vel, rtol=1e-6)
    assert swift.box == gadget.box and swift.a == gadget.a
    assert swift.particle_mass == np.float64(gadget.particle_mass) or abs(swift.particle_mass / gadget.particle_mass - 1) < 1e-9


def test_density_field_is_a_labservice_dataset(small_sim):
    store = open_store(str(small_sim / "density.zarr"))
    info = json.loads((small_sim / "simulation.json").read_text())
    assert store.meta.times == [s["a"] for s in info["snapshots"]]
    rho = store.read_box("density", len(store.meta.times) - 1, slice(0, 32), slice(0, 32), slice(0, 32))
    assert rho.shape == (32, 32, 32, 1)
    assert abs(rho.mean() - 1.0) < 1e-5  # CIC conserves mass
    halos = pd.read_parquet(small_sim / "halos.parquet")
    assert (halos["env_density"] > 1).mean() > 0.9  # halos sit in overdense cells


def test_halo_members_are_inside_their_cutout(small_sim):
    halos = pd.read_parquet(small_sim / "halos.parquet")
    h = halos.sort_values("mass").iloc[-1]
    snap = ParticleSnapshot(small_sim / "snapshots" / f"{int(h['snap']):03d}")
    members = np.load(small_sim / "snapshots" / f"{int(h['snap']):03d}" / "members.npy")
    own = members[int(h["member_start"]) : int(h["member_start"]) + int(h["n_particles"])]
    cut = snap.sphere((h["x_com"], h["y_com"], h["z_com"]), 10.0, fields=["ParticleIDs"])
    assert np.isin(own, cut["ParticleIDs"]).all() and cut["ParticleIDs"].size > own.size


def test_cli_ingests_swift_snapshots(small_sim, tmp_path):
    src = tmp_path / "swift"
    src.mkdir()
    for s in (6, 7):
        write_swift_snapshot(src / f"snap_{s:04d}.hdf5", read_snapshot(small_sim / "gadget" / f"snap_{s:03d}.hdf5"))
    dest = tmp_path / "mine"
    cmd = [sys.executable, "-m", "labservice", "ingest-nbody", str(src / "snap_*.hdf5"), "--dest", str(dest),
           "--density-grid", "16"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    info = json.loads((dest / "simulation.json").read_text())
    assert [s["snap"] for s in info["snapshots"]] == [0, 1] and info["id"] == "mine"
    ours = pd.read_parquet(dest / "halos.parquet")
    ref = pd.read_parquet(small_sim / "halos.parquet")
    assert len(ours[ours["snap"] == 1]) == len(ref[ref["snap"] == 7])
