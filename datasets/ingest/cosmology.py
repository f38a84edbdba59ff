"""Ingest cosmology datasets: snapshots -> halos -> trees -> catalogs, particles, density field.

A cosmology dataset is a folder::

    simulation.json           id, box, cosmology, particle mass, snapshots (snap, a, z, n_halos)
    halos.parquet             every halo of every snapshot, sorted by depth-first id (catalog + tree columns)
    snapshots/NNN/            Morton-ordered particles with key-offset index (storage.particles), members.npy
    density.zarr              CIC density rho/mean per snapshot, a normal labservice field dataset
    trees/tree_0_0_0.dat      the trees in consistent-trees ASCII (ytree reads it)
    gadget/snap_NNN.hdf5      (demo build_cosmo only) the Gadget-4-style snapshots the PM run wrote
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft

from labservice.datasets.ingest.fof import fof_labels, halo_properties
from labservice.datasets.ingest.gadget import ParticleData
from labservice.datasets.ingest.mesh import cic_interpolate, density_contrast, wavevectors
from labservice.datasets.ingest.trees import depth_first_ids, link_descendants, write_consistent_trees
from labservice.errors import InvalidInput
from labservice.storage.metadata import FORMAT_VERSION
from labservice.storage.morton import encode3
from labservice.storage.particles import choose_level, write_particles

LINKING_B = 0.2
MIN_MEMBERS = 20
ENV_SMOOTHING = 5.0  # Mpc/h, Gaussian radius of the smoothed environment density


def _environment(rho: np.ndarray, centres: np.ndarray, box: float) -> tuple[np.ndarray, np.ndarray]:
    # rho is [x, y, z]; the field at each centre, raw and Gaussian-smoothed over ENV_SMOOTHING.
    n = rho.shape[0]
    kx, ky, kz = wavevectors(n, box)
    smooth = scipy.fft.irfftn(
        scipy.fft.rfftn(rho) * np.exp(-0.5 * (kx**2 + ky**2 + kz**2) * ENV_SMOOTHING**2), s=rho.shape
    )
    field = np.stack([rho, smooth], axis=-1)
    vals = cic_interpolate(np.ascontiguousarray(field), np.ascontiguousarray(centres, dtype=np.float64), box)
    return vals[:, 0], vals[:, 1]


def _density_store(dest: Path, sim_id: str, grid: int, box: float, times: list[float]):
    from labservice.storage import Axis, DatasetMeta, Grid, Variable, create_store

    axis = Axis(size=grid, periodic=True, start=0.0, step=box / grid)
    meta = DatasetMeta(
        format_version=FORMAT_VERSION,
        id=f"{sim_id}-density",
        title=f"{sim_id}: CIC dark-matter density",
        description="Cloud-in-cell density of the dark-matter particles over the mean; times are scale factors.",
        grid=Grid(x=axis, y=axis, z=axis),
        times=times,
        variables={"density": Variable(components=["rho"], units="rho/rho_mean")},
        chunks=(min(grid, 32),) * 3,
        shards=(grid,) * 3,
        provenance={"source": sim_id, "time_axis": "scale factor"},
    )
    return create_store(str(dest / "density.zarr"), meta, backend="zarr", overwrite=True)


def ingest_snapshots(
    snapshots: Iterable[ParticleData],
    dest: str | Path,
    sim_id: str | None = None,
    density_grid: int = 64,
    overwrite: bool = False,
    progress: bool = False,
    n_snapshots: int | None = None,
) -> Path:
    """Turn particle snapshots (increasing a) into a cosmology dataset folder (see the module docstring)."""
    dest = Path(dest)
    sim_id = sim_id or dest.name
    if (dest / "simulation.json").exists() and not overwrite:
        raise InvalidInput(f"{dest} already holds a dataset; pass overwrite=True to replace it")
    dest.mkdir(parents=True, exist_ok=True)
    catalogs, members, starts, snap_rows, rho_fields = [], [], [], [], []
    first = None
    for s, data in enumerate(snapshots):
        if first is None:
            first = data
            level = choose_level(data.ids.size)
        if progress:
            print(f"snapshot {s}: a={data.a:.4f}, {data.ids.size} particles", flush=True)
        spacing = data.box / np.cbrt(data.ids.size)
        snap_dir = dest / "snapshots" / f"{s:03d}"
        write_particles(snap_dir, data.pos, data.vel, data.ids, data.box, level)
        labels = fof_labels(data.pos, data.box, LINKING_B * spacing, MIN_MEMBERS)
        cat = halo_properties(data.pos, data.vel, data.ids, labels, data.box, data.a, data.particle_mass,
                              data.cosmology["omega_m"], data.cosmology["omega_l"], softening=0.5 * spacing)
        np.save(snap_dir / "members.npy", cat.member_ids)
        rho = density_contrast(data.pos, density_grid, data.box) + 1.0
        rho_fields.append(rho.astype(np.float32))
        cols = dict(cat.columns)
        centres = np.stack([cols["x"], cols["y"], cols["z"]], axis=1)
        cols["env_density"], cols["env_density_smooth"] = _environment(rho, centres, data.box) if len(cat) else (
            np.zeros(0), np.zeros(0))
        cols["snap"] = np.full(len(cat), s, dtype=np.int64)
        cols["a"] = np.full(len(cat), data.a)
        cols["redshift"] = np.full(len(cat), 1.0 / data.a - 1.0)
        cols["member_start"] = cat.member_start
        n_cell = 1 << level
        cell = np.floor(centres * (n_cell / data.box)).astype(np.int64) % n_cell
        cols["cell_ix"], cols["cell_iy"], cols["cell_iz"] = cell.T if len(cat) else (np.zeros(0, np.int64),) * 3
        cols["morton_key"] = encode3(cell[:, 0], cell[:, 1], cell[:, 2]).astype(np.int64)
        catalogs.append(pd.DataFrame(cols))
        members.append(cat.member_ids)
        starts.append(cat.member_start)
        snap_rows.append({"snap": s, "a": data.a, "redshift": 1.0 / data.a - 1.0, "n_halos": len(cat)})
    if first is None:
        raise InvalidInput("no snapshots to ingest")
    halos = _assemble_trees(catalogs, members, starts)
    halos.to_parquet(dest / "halos.parquet", index=False)
    store = _density_store(dest, sim_id, density_grid, first.box, [r["a"] for r in snap_rows])
    for t, rho in enumerate(rho_fields):
        store.write_box("density", t, 0, 0, 0, rho.transpose(2, 1, 0)[..., None])
        store.mark_shard_done("density", t, (0, 0, 0))
    store.close()
    cos = first.cosmology
    write_consistent_trees(dest / "trees" / "tree_0_0_0.dat", halos, first.box, cos["omega_m"], cos["omega_l"],
                           cos["h"])
    info = {
        "id": sim_id, "kind": "cosmology", "box": first.box, "cosmology": cos,
        "particle_mass": first.particle_mass, "n_particles": int(first.ids.size), "index_level": level,
        "linking_b": LINKING_B, "min_members": MIN_MEMBERS, "density_grid": density_grid, "snapshots": snap_rows,
        "units": {"length": "Mpc/h comoving", "velocity": "km/s peculiar", "mass": "Msun/h"},
    }
    (dest / "simulation.json").write_text(json.dumps(info, indent=1))
    return dest


def _assemble_trees(catalogs: list[pd.DataFrame], members, starts) -> pd.DataFrame:
    # Link each snapshot to the next, number trees depth-first, and sort the whole catalog by id.
    desc_local, shared = link_descendants(members, starts)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in catalogs])])
    halos = pd.concat(catalogs, ignore_index=True)
    descendant = np.concatenate(
        [np.where(d >= 0, d + offsets[s + 1] if s + 1 < len(catalogs) else -1, -1) for s, d in enumerate(desc_local)]
    ).astype(np.int64)
    halos["shared_fraction"] = np.concatenate(shared)
    cols = depth_first_ids(halos["snap"].to_numpy(), halos["mass"].to_numpy(), descendant)
    for name, values in cols.items():
        halos[name] = values
    front = ["id", "snap", "fof_rank", "mass", "n_particles", "x", "y", "z"]
    halos = halos[front + [c for c in halos.columns if c not in front]]
    return halos.sort_values("id", kind="stable").reset_index(drop=True)
