"""Build the demo datasets (isotropic DNS, analytic channel, N-body cosmo) through the ingest paths a user takes.

Each demo writes its raw HDF5 snapshots and a descriptor into ``<data_dir>/.raw/<id>`` (the descriptor
last, so its presence means the raw output is complete), ingests them into ``<data_dir>/<id>`` and then
removes the raw folder. A dataset counts as built when its metadata says the ingest completed and it was
made by the current demo version; an interrupted build resumes: raw output that is complete is reused
and ingest skips the shards it already wrote.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import numpy as np
import yaml

from labservice.datasets.demo.channel import write_channel_run
from labservice.datasets.demo.isotropic import DNSConfig, write_isotropic_run
from labservice.datasets.demo.nbody import RunConfig, run_pm
from labservice.datasets.ingest import ingest, load_descriptor
from labservice.datasets.ingest.gadget import ingest_nbody, write_gadget_snapshot
from labservice.errors import InvalidInput, LabError, NotFound, unknown
from labservice.storage import open_store

# Bump when a demo's content changes, so existing builds are redone.
DEMO_VERSION = 1
RAW_DIR = ".raw"

Writer = Callable[[Path, str, str], Generator[str, None, Path]]


def _isotropic(size: int) -> Writer:
    def write(raw: Path, dataset_id: str, store: str) -> Generator[str, None, Path]:
        return write_isotropic_run(raw, dataset_id, store, DNSConfig(n=size))

    return write


def _channel(raw: Path, dataset_id: str, store: str) -> Generator[str, None, Path]:
    return write_channel_run(
        raw, dataset_id, store, shape=(64, 65, 64), times=np.round(np.arange(24) * 0.05, 12)
    )


def demo_writers(size: int = 64) -> dict[str, Writer]:
    """The demo datasets for a grid size: id -> writer of raw output and descriptor."""
    if size not in (32, 64, 128):
        raise InvalidInput(f"demo size must be 64, 128 or (for quick checks) 32; got {size}")
    return {f"isotropic{size}": _isotropic(size), "channel64": _channel}


def is_built(url: str | os.PathLike[str]) -> bool:
    """Whether a demo dataset is present, completely ingested and of the current demo version."""
    try:
        store = open_store(str(url))
    except LabError:
        return False
    try:
        prov = store.meta.provenance
        return (
            prov.get("ingest", {}).get("complete") is True
            and prov.get("demo", {}).get("version") == DEMO_VERSION
        )
    finally:
        store.close()


def _select(writers: Sequence[str], only: Sequence[str] | None) -> list[str]:
    if not only:
        return list(writers)
    chosen = []
    for name in only:
        # "isotropic" and "channel" name the demo whatever its size.
        match = [i for i in writers if i == name or i.rstrip("0123456789") == name]
        if not match:
            raise unknown("demo dataset", name, writers, error=InvalidInput)
        chosen += [m for m in match if m not in chosen]
    return chosen


def build_demos(
    data_dir: str | os.PathLike[str], size: int = 64, only: Sequence[str] | None = None, force: bool = False
) -> Iterator[str]:
    """Build the demo datasets that are missing or incomplete under ``data_dir``; yields progress lines.

    Parameters
    ----------
    data_dir : path-like
        Folder that receives ``isotropic<size>``, ``channel64`` and ``cosmo<size>``.
    size : int
        Grid size of the isotropic DNS (64 by default; 128 builds ``isotropic128``, which takes far longer).
    only : sequence of str, optional
        Build only these (ids such as "channel64", or "isotropic"/"channel"/"cosmo").
    force : bool
        Rebuild even when a complete dataset is present.
    """
    data = Path(data_dir).resolve()
    writers = demo_writers(size)
    cosmo_id = f"cosmo{size}"
    for dataset_id in _select([*writers, cosmo_id], only):
        if dataset_id == cosmo_id:
            yield from _build_cosmo(data, size, force)
            continue
        target = data / dataset_id
        if not force and is_built(target):
            yield f"{dataset_id}: present at {target}"
            continue
        started = time.perf_counter()
        yield f"{dataset_id}: building into {target}"
        yield from _build_one(writers[dataset_id], dataset_id, data, force)
        yield f"{dataset_id}: done in {time.perf_counter() - started:.0f} s"


# The 128^3 run is the benchmark run: 80 outputs from z = 3 give merger trees of more than 1e5 nodes.
COSMO_RUNS: dict[int, dict[str, float]] = {128: {"n_snapshots": 80, "z_first": 3.0}}


def _build_cosmo(data: Path, size: int, force: bool) -> Iterator[str]:
    """The N-body demo (PM run, Gadget snapshots, halos, trees, density): its own ingest, not a field one."""
    from labservice.datasets.simulation import is_simulation

    target = data / f"cosmo{size}"
    if not force and is_simulation(target):
        yield f"cosmo{size}: present at {target}"
        return
    started = time.perf_counter()
    yield f"cosmo{size}: running the N-body simulation into {target}"
    build_cosmo(data, size=size, force=force, **COSMO_RUNS.get(size, {}))
    yield f"cosmo{size}: done in {time.perf_counter() - started:.0f} s"


def build_cosmo(
    data_dir: str | Path,
    size: int = 64,
    n_snapshots: int = 31,
    seed: int = 42,
    force: bool = False,
    name: str | None = None,
    box: float = 100.0,
    z_first: float = 9.0,
) -> Path:
    """Run the demo N-body simulation and ingest it as ``cosmo{size}`` under ``data_dir``.

    Parameters
    ----------
    data_dir : path
        Parent folder; the dataset goes to ``data_dir/name``.
    size : int
        Particles per side (64 for the demo, 128 for the benchmark run); the PM mesh has the same size.
    n_snapshots : int
        Outputs spaced in ln a from ``z_first`` to z = 0 (snap n_snapshots - 1 is z = 0).
    force : bool
        Rebuild even when the dataset exists.
    name : str, optional
        Dataset id and folder name, default ``cosmo{size}``.
    box : float
        Box side in Mpc/h.
    z_first : float
        Redshift of the first output. The benchmark run (size 128, 80 outputs from z = 3) uses a late start so
        that most outputs hold halos: its trees have about 10^5 nodes, where 31 outputs from z = 9 would give
        about 2.5e4 (estimated from the halo counts per snapshot).

    Returns
    -------
    Path of the dataset folder.
    """
    name = name or f"cosmo{size}"
    dest = Path(data_dir) / name
    if (dest / "simulation.json").exists() and not force:
        return dest
    config = RunConfig(n=size, box=box, n_snapshots=n_snapshots, seed=seed, z_first_output=z_first)
    cos = config.cosmology
    gadget_dir = dest / "gadget"
    if dest.exists():
        shutil.rmtree(dest)
    for snap in run_pm(config):
        vel_pec = snap.vel.astype(np.float64) * np.sqrt(snap.a)
        write_gadget_snapshot(gadget_dir / f"snap_{snap.index:03d}.hdf5", snap.pos, vel_pec, snap.ids, snap.a,
                              config.box, config.particle_mass, cos.omega_m, cos.omega_l, cos.h)
    return ingest_nbody(sorted(gadget_dir.glob("snap_*.hdf5")), dest, sim_id=name,
                        density_grid=min(size, 64), overwrite=True)


def _build_one(writer: Writer, dataset_id: str, data: Path, force: bool) -> Iterator[str]:
    raw = data / RAW_DIR / dataset_id
    descriptor = raw / f"{dataset_id}.yaml"
    target = data / dataset_id
    fresh_raw = force or not descriptor.is_file()
    if fresh_raw:
        shutil.rmtree(raw, ignore_errors=True)
        # The store path in the descriptor is relative, as a user would write it.
        descriptor = yield from writer(raw, dataset_id, os.path.relpath(target, raw))
        _stamp(descriptor)
    else:
        yield f"  {dataset_id}: reusing the raw output in {raw}"
    # New raw output replaces any partial store; reused raw output resumes into it.
    started = time.perf_counter()
    yield f"  {dataset_id}: ingesting {descriptor}"
    desc = load_descriptor(descriptor)
    try:
        stats = ingest(desc, descriptor.parent, overwrite=fresh_raw, progress=True, descriptor=descriptor)
    except (InvalidInput, NotFound):
        if fresh_raw:
            raise
        # The partial store or raw output does not match: start this dataset again from scratch.
        yield f"  {dataset_id}: previous partial build does not match; starting again"
        yield from _build_one(writer, dataset_id, data, force=True)
        return
    mb = stats.bytes_written / 1e6
    yield (
        f"  {dataset_id}: ingested {stats.shards_written} shards ({mb:.0f} MB), skipped {stats.shards_skipped}, "
        f"in {time.perf_counter() - started:.1f} s"
    )
    shutil.rmtree(raw, ignore_errors=True)
    try:
        (data / RAW_DIR).rmdir()
    except OSError:
        pass  # other raw folders still there


def _stamp(descriptor: Path) -> None:
    """Mark the dataset as a demo of the current version (checked by :func:`is_built`)."""
    doc = yaml.safe_load(descriptor.read_text())
    doc.setdefault("provenance", {})["demo"] = {
        "builder": "labservice.datasets.demo.build",
        "version": DEMO_VERSION,
    }
    descriptor.write_text(yaml.safe_dump(doc, sort_keys=False))
