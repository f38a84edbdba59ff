"""Gadget-4-style HDF5 snapshots (written and read) and SWIFT-style snapshots (read), plus ``ingest_nbody``.

Everything read is converted to one convention: comoving positions in Mpc/h, peculiar velocities in km/s,
masses in Msun/h. Gadget stores ``Velocities`` as v_pec / sqrt(a) in its unit system (``Parameters`` attributes
``UnitLength_in_cm``, ``UnitMass_in_g``, ``UnitVelocity_in_cm_per_s``; lengths and masses carry 1/h). SWIFT stores
comoving lengths and masses without h (``Units`` and ``Cosmology`` groups) and peculiar velocities directly.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from labservice.errors import CorruptData, InvalidInput, NotFound

MPC_CM = 3.085678e24
MSUN_G = 1.989e33
KMS_CMS = 1e5


@dataclass
class ParticleData:
    """Dark-matter particles of one snapshot in labservice units."""

    pos: np.ndarray  # (N, 3) comoving Mpc/h
    vel: np.ndarray  # (N, 3) peculiar km/s
    ids: np.ndarray  # (N,)
    a: float
    box: float  # Mpc/h
    particle_mass: float  # Msun/h
    cosmology: dict[str, float] = field(default_factory=dict)
    source: str = ""


def write_gadget_snapshot(
    path: str | Path,
    pos: np.ndarray,
    vel_pec: np.ndarray,
    ids: np.ndarray,
    a: float,
    box: float,
    particle_mass: float,
    omega_m: float,
    omega_l: float,
    h: float,
) -> Path:
    """Write one Gadget-4-style HDF5 snapshot (a single file, dark matter as PartType1).

    Units are Mpc/h, km/s and 1e10 Msun/h, declared in the ``Parameters`` group as Gadget-4 does; the
    cosmology is also in ``Header`` as older Gadget HDF5 readers expect.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = pos.shape[0]
    npart = np.zeros(6, dtype=np.int64)
    npart[1] = n
    masses = np.zeros(6)
    masses[1] = particle_mass / 1e10
    with h5py.File(path, "w") as f:
        hdr = f.create_group("Header")
        hdr.attrs.update({
            "BoxSize": float(box), "Time": float(a), "Redshift": 1.0 / a - 1.0,
            "NumPart_ThisFile": npart, "NumPart_Total": npart.astype(np.uint64),
            "NumPart_Total_HighWord": np.zeros(6, dtype=np.uint64), "MassTable": masses,
            "NumFilesPerSnapshot": 1, "Omega0": omega_m, "OmegaLambda": omega_l, "HubbleParam": h,
            "Flag_DoublePrecision": 0,
        })
        par = f.create_group("Parameters")
        par.attrs.update({
            "UnitLength_in_cm": MPC_CM, "UnitMass_in_g": 1e10 * MSUN_G, "UnitVelocity_in_cm_per_s": KMS_CMS,
            "Omega0": omega_m, "OmegaLambda": omega_l, "HubbleParam": h, "BoxSize": float(box),
            "ComovingIntegrationOn": 1,
        })
        f.create_group("Config").attrs["PERIODIC"] = 1
        g = f.create_group("PartType1")
        g.create_dataset("Coordinates", data=np.asarray(pos, dtype=np.float32))
        g.create_dataset("Velocities", data=(np.asarray(vel_pec, dtype=np.float64) / np.sqrt(a)).astype(np.float32))
        g.create_dataset("ParticleIDs", data=np.asarray(ids, dtype=np.uint64))
    return path


def write_swift_snapshot(path: str | Path, data: ParticleData) -> Path:
    """Write a SWIFT-style snapshot (lengths in Mpc and masses in 1e10 Msun, no h); used to test the reader."""
    h = data.cosmology.get("h", 0.7)
    with h5py.File(path, "w") as f:
        hdr = f.create_group("Header")
        npart = np.array([0, data.ids.size, 0, 0, 0, 0, 0], dtype=np.int64)
        hdr.attrs.update({
            "BoxSize": np.full(3, data.box / h), "Scale-factor": data.a, "Redshift": 1 / data.a - 1,
            "NumPart_ThisFile": npart, "NumPart_Total": npart, "NumFilesPerSnapshot": 1, "Dimension": 3,
        })
        units = f.create_group("Units")
        units.attrs.update({"Unit length in cgs (U_L)": MPC_CM, "Unit mass in cgs (U_M)": 1e10 * MSUN_G,
                            "Unit time in cgs (U_t)": MPC_CM / KMS_CMS})
        f.create_group("Cosmology").attrs.update({
            "h": h, "Omega_m": data.cosmology.get("omega_m", 0.3), "Omega_lambda": data.cosmology.get("omega_l", 0.7),
            "Scale-factor": data.a,
        })
        f.create_group("Code").attrs["Code"] = "SWIFT"
        g = f.create_group("PartType1")
        g.create_dataset("Coordinates", data=data.pos / h)
        g.create_dataset("Velocities", data=data.vel)
        g.create_dataset("Masses", data=np.full(data.ids.size, data.particle_mass / h / 1e10))
        g.create_dataset("ParticleIDs", data=data.ids)
    return Path(path)


def _scalar(v) -> float:
    return float(np.asarray(v).ravel()[0])


def _snapshot_files(path: Path, nfiles: int) -> list[Path]:
    # Gadget multi-file snapshots are name.0.hdf5, name.1.hdf5, ...
    m = re.match(r"(.*)\.(\d+)\.hdf5$", str(path))
    if nfiles <= 1 or not m:
        return [path]
    return [Path(f"{m.group(1)}.{i}.hdf5") for i in range(nfiles)]


def read_snapshot(path: str | Path) -> ParticleData:
    """Read the dark matter (PartType1) of a Gadget-2/3/4 or SWIFT HDF5 snapshot, all its files."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no snapshot file at {path}")
    with h5py.File(path, "r") as f:
        if "Header" not in f:
            raise InvalidInput(f"{path} has no 'Header' group: not a Gadget or SWIFT snapshot")
        hdr = dict(f["Header"].attrs)
        is_swift = "Units" in f and "Unit length in cgs (U_L)" in f["Units"].attrs
        nfiles = int(_scalar(hdr.get("NumFilesPerSnapshot", 1)))
        if is_swift:
            cos = dict(f["Cosmology"].attrs) if "Cosmology" in f else {}
            units = dict(f["Units"].attrs)
            h = _scalar(cos.get("h", 1.0))
            length = _scalar(units["Unit length in cgs (U_L)"]) / MPC_CM * h
            mass_unit = _scalar(units["Unit mass in cgs (U_M)"]) / MSUN_G * h
            vel_unit = _scalar(units["Unit length in cgs (U_L)"]) / _scalar(units["Unit time in cgs (U_t)"]) / KMS_CMS
            a = _scalar(cos.get("Scale-factor", hdr.get("Scale-factor", hdr.get("Time", 1.0))))
            cosmo = {"omega_m": _scalar(cos.get("Omega_m", 0.3)), "omega_l": _scalar(cos.get("Omega_lambda", 0.7)),
                     "h": h}
            vel_factor = vel_unit
            box = _scalar(hdr["BoxSize"]) * length
            table_mass = 0.0
        else:
            par = dict(f["Parameters"].attrs) if "Parameters" in f else {}
            get = lambda k, d: par.get(k, hdr.get(k, d))  # noqa: E731 - Gadget-4 moved these to Parameters
            length = _scalar(get("UnitLength_in_cm", 3.085678e21)) / MPC_CM
            mass_unit = _scalar(get("UnitMass_in_g", 1.989e43)) / MSUN_G
            vel_unit = _scalar(get("UnitVelocity_in_cm_per_s", KMS_CMS)) / KMS_CMS
            a = _scalar(hdr["Time"])
            cosmo = {"omega_m": _scalar(get("Omega0", 0.3)), "omega_l": _scalar(get("OmegaLambda", 0.7)),
                     "h": _scalar(get("HubbleParam", 0.7))}
            vel_factor = vel_unit * np.sqrt(a)
            box = _scalar(hdr["BoxSize"]) * length
            table_mass = float(np.asarray(hdr.get("MassTable", np.zeros(6)))[1]) * mass_unit
    pos, vel, ids, masses = [], [], [], []
    for fp in _snapshot_files(path, nfiles):
        with h5py.File(fp, "r") as f:
            if "PartType1" not in f:
                continue
            g = f["PartType1"]
            pos.append(np.asarray(g["Coordinates"], dtype=np.float64) * length)
            vel.append(np.asarray(g["Velocities"], dtype=np.float64) * vel_factor)
            ids.append(np.asarray(g["ParticleIDs"]))
            if table_mass == 0.0 and "Masses" in g:
                masses.append(np.asarray(g["Masses"], dtype=np.float64) * mass_unit)
    if not pos:
        raise InvalidInput(f"{path} holds no PartType1 (dark matter) particles")
    if table_mass == 0.0:
        m = np.concatenate(masses) if masses else np.zeros(1)
        if m.size == 0 or not np.allclose(m, m[0], rtol=1e-5):
            raise InvalidInput(f"{path}: PartType1 masses must be equal (one species of dark matter)")
        table_mass = float(m[0])
    pos_all = np.mod(np.concatenate(pos), box)
    if not np.all(np.isfinite(pos_all)):
        raise CorruptData(f"{path}: non-finite particle coordinates")
    return ParticleData(pos_all, np.concatenate(vel), np.concatenate(ids), a, box, table_mass, cosmo,
                        "swift" if is_swift else "gadget")


def snapshot_paths(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand a glob or list into snapshot files (first file of multi-file snapshots only), in name order."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    paths: list[Path] = []
    for item in items:
        matches = sorted(glob.glob(str(item))) or [str(item)]
        paths.extend(Path(m) for m in matches)
    paths = [p for p in paths if not re.search(r"\.([1-9]\d*)\.hdf5$", str(p))]
    if not paths:
        raise NotFound(f"no snapshot files match {inputs!r}")
    return paths


def iter_snapshots(paths: list[Path]) -> Iterator[ParticleData]:
    """Read snapshots one at a time, in order of increasing scale factor (memory stays one snapshot)."""
    times = []
    for p in paths:
        with h5py.File(p, "r") as f:
            hdr = f["Header"].attrs
            times.append(_scalar(hdr.get("Time", hdr.get("Scale-factor", 0.0))))
    for i in np.argsort(times, kind="stable"):
        yield read_snapshot(paths[i])


def ingest_nbody(
    inputs: str | Path | Iterable[str | Path],
    dest: str | Path,
    sim_id: str | None = None,
    density_grid: int = 64,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Ingest Gadget or SWIFT snapshots into a labservice cosmology dataset (halos, trees, particles, density).

    Parameters
    ----------
    inputs : glob, path or list of paths
        Snapshot files (``snap_*.hdf5``); multi-file snapshots are given by their ``.0.hdf5`` file.
    dest : path
        Folder of the new dataset.
    sim_id : str, optional
        Dataset id (default: the folder name).
    density_grid : int
        Cells per side of the CIC density field.
    """
    from labservice.datasets.ingest.cosmology import ingest_snapshots

    paths = snapshot_paths(inputs)
    return ingest_snapshots(iter_snapshots(paths), dest, sim_id=sim_id, density_grid=density_grid,
                            overwrite=overwrite, progress=progress, n_snapshots=len(paths))
