"""One built cosmology dataset opened for queries: snapshots, halo search, trees, mergers, particle cutouts, SQL.

A :class:`Simulation` wraps a folder written by :func:`labservice.datasets.ingest.cosmology.ingest_snapshots`. It knows
nothing of HTTP; the web routes (``labservice.routers.cosmology``) and notebooks call the same methods.
:class:`SimulationRegistry` holds every simulation a server publishes.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labservice.datasets.haloindex import HaloIndex
from labservice.datasets.treequery import KINDS, TreeTable
from labservice.errors import InvalidInput, LabError, NotFound, unknown
from labservice.storage.particles import FIELDS as PARTICLE_FIELDS
from labservice.storage.particles import ParticleSnapshot, cell_ranges

if TYPE_CHECKING:
    from labservice.datasets.sql import SqlEngine, SqlResult

__all__ = [
    "FILTER_OPS",
    "HaloPage",
    "MAX_LIMIT",
    "Simulation",
    "SimulationRegistry",
    "is_simulation",
    "parse_filter",
]

# Filter suffixes: ``mass__gt=1e13`` keeps rows with mass > 1e13; a bare ``column=value`` means __eq.
FILTER_OPS = {
    "gt": np.greater,
    "lt": np.less,
    "ge": np.greater_equal,
    "le": np.less_equal,
    "eq": np.equal,
    "ne": np.not_equal,
}
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
CUTOUT_UNITS = ("r200", "mpc")
GYR_PER_HUBBLE_TIME = 9.777922  # 1 / (100 km/s/Mpc) in Gyr; divide by h


def is_simulation(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a built cosmology dataset."""
    info = Path(path) / "simulation.json"
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text()).get("kind") == "cosmology"
    except (OSError, ValueError):
        return False


def parse_filter(key: str) -> tuple[str, str]:
    """Split ``"mass__gt"`` into ``("mass", "gt")``; a key without an operator is an equality."""
    column, sep, op = key.rpartition("__")
    if not sep:
        return key, "eq"
    if op not in FILTER_OPS:
        raise InvalidInput(
            f"unknown filter operator {op!r} in {key!r}; use one of "
            + ", ".join(f"__{o}" for o in FILTER_OPS)
        )
    return column, op


def cosmic_time(a: np.ndarray | float, omega_m: float, omega_l: float, h: float) -> np.ndarray:
    """Age of a flat LCDM universe at scale factor ``a``, in Gyr (matter + Lambda, no radiation)."""
    a = np.asarray(a, dtype=np.float64)
    hubble_time = GYR_PER_HUBBLE_TIME / h
    if omega_l <= 0:
        return 2.0 / 3.0 * hubble_time / math.sqrt(omega_m) * a**1.5
    return 2.0 / (3.0 * math.sqrt(omega_l)) * hubble_time * np.arcsinh(math.sqrt(omega_l / omega_m) * a**1.5)


@dataclass
class HaloPage:
    """One page of a halo search: the rows, and how many rows matched in all."""

    frame: pd.DataFrame
    total: int
    offset: int
    limit: int
    examined: int = 0  # catalog rows tested: the whole snapshot, or only the index cells near= / box= touch


class Simulation:
    """A cosmology dataset folder opened for queries.

    Parameters
    ----------
    path : str or Path
        Folder with ``simulation.json``, ``halos.parquet`` and ``snapshots/NNN``.
    sql_max_rows, sql_timeout, sql_memory_limit, sql_threads
        Limits of every SQL query (see :class:`~labservice.datasets.sql.SqlEngine`).
    """

    def __init__(
        self,
        path: str | Path,
        sql_max_rows: int = 100_000,
        sql_timeout: float = 10.0,
        sql_memory_limit: str = "256MB",
        sql_threads: int = 1,
    ) -> None:
        self.path = Path(path)
        if not is_simulation(self.path):
            raise NotFound(f"no cosmology dataset at {self.path} (simulation.json with kind 'cosmology')")
        self.info: dict[str, Any] = json.loads((self.path / "simulation.json").read_text())
        self.id: str = self.info["id"]
        self.box = float(self.info["box"])
        self.halos = pd.read_parquet(self.path / "halos.parquet")
        # Catalogs written before R200c became NaN when undefined stored 0 there: read both as "none".
        undefined = ~(self.halos["r200c"].to_numpy() > 0)
        if undefined.any():
            self.halos.loc[undefined, ["r200c", "m200c"]] = np.nan
        self.trees = TreeTable(self.halos)
        self.columns: list[str] = list(self.halos.columns)
        snap_col = self.halos["snap"].to_numpy()
        # Row numbers of each snapshot's halos, so a search scans one snapshot only.
        self._rows = {int(r["snap"]): np.flatnonzero(snap_col == r["snap"]) for r in self.info["snapshots"]}
        self._xyz = self.halos[["x", "y", "z"]].to_numpy()
        self._columns: dict[str, np.ndarray] = {}  # column arrays for filters, filled on first use
        self.index = HaloIndex(snap_col, self._xyz, self.box)
        self.sql_max_rows = int(sql_max_rows)
        self._sql_args = (int(sql_max_rows), float(sql_timeout), sql_memory_limit, int(sql_threads))
        self._sql: SqlEngine | None = None
        self._particles: dict[int, ParticleSnapshot] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Simulation {self.id}: {len(self._rows)} snapshots, {len(self.halos)} halos>"

    # -- snapshots ------------------------------------------------------------------------------------
    def snapshots(self) -> pd.DataFrame:
        """snap, scale factor ``a``, ``redshift``, cosmic ``time`` (Gyr) and ``n_halos`` of every snapshot."""
        frame = pd.DataFrame(self.info["snapshots"], columns=["snap", "a", "redshift", "n_halos"])
        cos = self.info["cosmology"]
        frame.insert(3, "time", cosmic_time(frame["a"].to_numpy(), cos["omega_m"], cos["omega_l"], cos["h"]))
        return frame

    def check_snap(self, snap: int) -> int:
        snap = int(snap)
        if snap not in self._rows:
            last = max(self._rows)
            raise NotFound(f"no snapshot {snap} in {self.id}; snapshots run from 0 to {last} ({last} is z = 0)")
        return snap

    def summary(self) -> dict[str, Any]:
        """The dataset-list entry: id, kind, box, particle count, snapshot range, halo count."""
        snaps = self.info["snapshots"]
        return {
            "id": self.id,
            "title": f"{self.id}: dark-matter N-body run, {self.info['n_particles']} particles",
            "kind": "cosmology",
            "box": self.box,
            "n_particles": int(self.info["n_particles"]),
            "particle_mass": float(self.info["particle_mass"]),
            "cosmology": self.info["cosmology"],
            "units": self.info.get("units", {}),
            "snapshots": {"count": len(snaps), "first_a": snaps[0]["a"], "last_a": snaps[-1]["a"]},
            "n_halos": int(len(self.halos)),
            "columns": self.columns,
            "particle_fields": list(PARTICLE_FIELDS),
            "density_dataset": f"{self.id}-density" if (self.path / "density.zarr").is_dir() else None,
            "sql": dict(zip(("max_rows", "timeout_seconds", "memory_limit", "threads"), self._sql_args, strict=True))
            | {"tables": ["halos", "snapshots", "trees"]},
            "halo_search": {"max_limit": MAX_LIMIT, "spatial_index_level": self.index.level},
            "r200c": "NaN (null in JSON) where the enclosed density never reaches 200 rho_crit; units=r200 then "
                     "answers 422",
        }

    # -- columns --------------------------------------------------------------------------------------
    def check_columns(self, names: Iterable[str], what: str = "halo column", extra: Iterable[str] = ()) -> list[str]:
        """Return ``names`` as a list; InvalidInput naming close matches for any unknown one."""
        allowed = set(self.columns) | set(extra)
        names = list(names)
        for name in names:
            if name not in allowed:
                raise unknown(what, name, allowed, error=InvalidInput)
        return names

    def _select(self, frame: pd.DataFrame, fields: Iterable[str] | None, extra: Iterable[str] = ()) -> pd.DataFrame:
        if fields is None:
            return frame
        fields = self.check_columns(fields, "field", extra)
        if "id" not in fields:
            fields = ["id", *fields]  # rows stay identifiable
        return frame[fields]

    # -- halo search ----------------------------------------------------------------------------------
    def search_halos(
        self,
        snap: int,
        filters: Mapping[str, Any] | None = None,
        near: tuple[float, float, float, float] | None = None,
        box: tuple[float, float, float, float, float, float] | None = None,
        order_by: str | Iterable[str] | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
        fields: Iterable[str] | None = None,
    ) -> HaloPage:
        """Halos of one snapshot that pass every filter, sorted and paged.

        Parameters
        ----------
        snap : int
            Snapshot number.
        filters : mapping
            ``{"mass__gt": 1e13, "n_particles__ge": 50, "fof_rank": 0}``: operators gt, lt, ge, le, eq, ne on
            any catalog column (a bare column name means eq).
        near : (x, y, z, r)
            Keep halos whose centre is within ``r`` of (x, y, z), measured periodically; adds ``distance``.
            Only the rows in the Morton-index cells the sphere overlaps are examined.
        box : (x0, y0, z0, x1, y1, z1)
            Keep halos with x0 <= x < x1 (and y, z), wrapping through the periodic edges; also indexed.
        order_by : str or list of str
            Columns to sort by, ``-`` in front for descending (``"-mass"``); ``distance`` with ``near``.
            Default: by id.
        limit, offset : int
            Page of the sorted rows; ``limit`` at most :data:`MAX_LIMIT`.
        fields : list of str, optional
            Columns to return (``id`` is always included).
        """
        snap = self.check_snap(snap)
        if not 0 <= int(limit) <= MAX_LIMIT:
            raise InvalidInput(f"limit must be in [0, {MAX_LIMIT}]; got {limit}. Page with offset= for more rows")
        if int(offset) < 0:
            raise InvalidInput(f"offset must be >= 0; got {offset}")
        rows = self._rows[snap]
        sphere = self._near(near) if near is not None else None
        bounds = self._box(box) if box is not None else None
        if sphere is not None:
            rows = self.index.sphere_rows(snap, *sphere)
        if bounds is not None:
            in_box = self.index.box_rows(snap, *bounds)
            rows = np.intersect1d(rows, in_box, assume_unique=True) if sphere is not None else in_box
        # Filter on cached column arrays and build a DataFrame only from the rows that pass.
        keep = np.ones(len(rows), dtype=bool)
        for key, value in (filters or {}).items():
            column, op = parse_filter(key)
            self.check_columns([column], "halo column")
            values = self._column(column)[rows]
            try:
                target = float(value) if values.dtype.kind in "iuf" else value
            except (TypeError, ValueError):
                raise InvalidInput(f"filter {key} needs a number; got {value!r}") from None
            keep &= FILTER_OPS[op](values, target)
        centres = self._xyz[rows]
        distance = None
        if sphere is not None:
            centre, radius = sphere
            delta = (centres - centre + 0.5 * self.box) % self.box - 0.5 * self.box
            distance = np.sqrt((delta**2).sum(axis=1))
            keep &= distance <= radius
        if bounds is not None:
            lo, hi = bounds
            keep &= np.all((centres - lo) % self.box < hi - lo, axis=1)
        examined, rows = len(rows), rows[keep]
        window = slice(int(offset), int(offset) + int(limit))
        if order_by is None:  # rows are in id order already: page before building the frame
            frame = self.halos.iloc[rows[window]]
            if distance is not None:
                frame = frame.assign(distance=distance[keep][window])
            page = frame
        else:
            frame = self.halos.iloc[rows]
            if distance is not None:
                frame = frame.assign(distance=distance[keep])
            page = self._order(frame, order_by).iloc[window]
        extra = ("distance",) if distance is not None else ()
        return HaloPage(self._select(page, fields, extra).reset_index(drop=True), int(len(rows)), int(offset),
                        int(limit), examined)

    def _column(self, name: str) -> np.ndarray:
        values = self._columns.get(name)
        if values is None:
            values = self._columns[name] = self.halos[name].to_numpy()
        return values

    def _near(self, near: Iterable[float]) -> tuple[np.ndarray, float]:
        vals = np.asarray(list(near), dtype=np.float64)
        if vals.shape != (4,) or not np.all(np.isfinite(vals)):
            raise InvalidInput(f"near must be four numbers x,y,z,r; got {list(near)}")
        if not 0 < vals[3] <= self.box / 2:
            raise InvalidInput(f"the radius in near= must be in (0, {self.box / 2:g}] (half the box); got {vals[3]}")
        return np.mod(vals[:3], self.box), float(vals[3])

    def _box(self, box: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
        vals = np.asarray(list(box), dtype=np.float64)
        if vals.shape != (6,) or not np.all(np.isfinite(vals)):
            raise InvalidInput(f"box must be six numbers x0,y0,z0,x1,y1,z1; got {list(box)}")
        lo, hi = vals[:3], vals[3:]
        if np.any(hi <= lo) or np.any(hi - lo > self.box):
            raise InvalidInput(f"box needs x0 < x1 (and y, z) with sides at most {self.box:g}; got {vals.tolist()}")
        return lo, hi

    def _order(self, frame: pd.DataFrame, order_by: str | Iterable[str] | None) -> pd.DataFrame:
        if order_by is None:
            return frame
        keys = [order_by] if isinstance(order_by, str) else list(order_by)
        names = [k.strip().removeprefix("-") for k in keys]
        extra = ("distance",) if "distance" in frame.columns else ()
        self.check_columns(names, "column in order_by", extra)
        ascending = [not k.strip().startswith("-") for k in keys]
        # id breaks ties, so pages are stable
        return frame.sort_values([*names, "id"], ascending=[*ascending, True], kind="stable")

    # -- one halo and its tree ------------------------------------------------------------------------
    def halo(self, halo_id: int, snap: int | None = None) -> dict[str, Any]:
        """All catalog and tree columns of one halo; NotFound when it is not at ``snap``."""
        row = self.halos.iloc[self.trees.row(halo_id)]
        if snap is not None and int(row["snap"]) != self.check_snap(snap):
            raise NotFound(f"halo {halo_id} is at snapshot {int(row['snap'])}, not {snap}")
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}

    def tree(
        self, halo_id: int, kind: str = "main-branch", snap: int | None = None, fields: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Tree rows of a halo; ``kind`` is one of progenitors, main-branch, descendants, full."""
        if kind not in KINDS:
            raise unknown("tree kind", kind, KINDS, error=InvalidInput)
        if snap is not None:
            self.check_snap(snap)
        return self._select(self.trees.tree(halo_id, kind, snap), fields).reset_index(drop=True)

    def mergers(self, halo_id: int, min_ratio: float = 0.2) -> pd.DataFrame:
        """Merger events along the halo's main branch (see :meth:`TreeTable.mergers`)."""
        return self.trees.mergers(halo_id, min_ratio).reset_index(drop=True)

    # -- particles ------------------------------------------------------------------------------------
    def particles(self, snap: int) -> ParticleSnapshot:
        """The Morton-ordered particle snapshot (opened once, memory-mapped)."""
        snap = self.check_snap(snap)
        with self._lock:
            if snap not in self._particles:
                self._particles[snap] = ParticleSnapshot(self.path / "snapshots" / f"{snap:03d}")
            return self._particles[snap]

    def cutout_sphere(self, halo_id: int, snap: int | None, radius: float = 2.0, units: str = "r200") -> tuple[
            np.ndarray, float]:
        """Centre and radius (Mpc/h) of a halo cutout; ``units`` r200 (times the halo's R200c) or mpc."""
        halo = self.halo(halo_id, snap)
        if units not in CUTOUT_UNITS:
            raise unknown("radius unit", units, CUTOUT_UNITS, error=InvalidInput)
        if not (math.isfinite(radius) and radius > 0):
            raise InvalidInput(f"radius must be a positive number; got {radius}")
        r = float(radius)
        if units == "r200":
            if not halo["r200c"] > 0:
                raise InvalidInput(
                    f"halo {halo_id} has no R200c: its enclosed density never reaches 200 rho_crit (a poorly "
                    f"resolved halo of {int(halo['n_particles'])} particles); give the radius in Mpc/h with units=mpc"
                )
            r *= float(halo["r200c"])
        if r > self.box / 2:
            raise InvalidInput(f"the cutout radius is {r:.3g} Mpc/h, over half the box ({self.box / 2:g})")
        return np.array([halo["x"], halo["y"], halo["z"]], dtype=np.float64), r

    def cutout_upper_bytes(self, halo_id: int, snap: int | None, radius: float, units: str,
                           fields: Iterable[str] | None = None) -> int:
        """An upper bound on a cutout's size, from the index cells it touches (checked before reading)."""
        centre, r = self.cutout_sphere(halo_id, snap, radius, units)
        parts = self.particles(int(self.halo(halo_id)["snap"]))
        ranges = cell_ranges(centre - r, centre + r, parts.box, parts.level, centre=centre, radius=r)
        count = int(sum(parts.offsets[b] - parts.offsets[a] for a, b in ranges))
        per_particle = sum(parts._arrays[f].itemsize * int(np.prod(parts._arrays[f].shape[1:]))
                           for f in self._particle_fields(fields))
        return count * (per_particle + 12)  # + Offsets

    def _particle_fields(self, fields: Iterable[str] | None) -> list[str]:
        fields = list(PARTICLE_FIELDS if fields is None else fields)
        for f in fields:
            if f not in PARTICLE_FIELDS:
                raise unknown("particle field", f, PARTICLE_FIELDS, error=InvalidInput)
        return fields

    def cutout(
        self,
        halo_id: int,
        snap: int | None = None,
        radius: float = 2.0,
        units: str = "r200",
        fields: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Every particle within ``radius`` of a halo's centre (periodic), not only its FOF members.

        Returns a dict of arrays (the requested fields plus ``Offsets``, the periodic displacement from the
        centre) and the scalars ``centre``, ``radius`` (Mpc/h), ``halo_id``, ``snap``, ``box``.
        """
        centre, r = self.cutout_sphere(halo_id, snap, radius, units)
        halo_snap = int(self.halo(halo_id)["snap"])
        data = self.particles(halo_snap).sphere(centre, r, self._particle_fields(fields))
        return {**data, "centre": centre, "radius": r, "halo_id": int(halo_id), "snap": halo_snap, "box": self.box}

    # -- SQL ------------------------------------------------------------------------------------------
    def sql(self, query: str, truncate: bool = False) -> SqlResult:
        """Run one read-only SELECT over the tables halos, trees and snapshots (see ``SqlEngine.query``)."""
        if self._sql is None:
            with self._lock:
                if self._sql is None:
                    from labservice.datasets.sql import SqlEngine  # DuckDB loads on the first query

                    max_rows, timeout, memory, threads = self._sql_args
                    self._sql = SqlEngine(self.path / "halos.parquet", self.snapshots(), max_rows, timeout, memory,
                                          threads)
        return self._sql.query(query, truncate)

    def close(self) -> None:
        if self._sql is not None:
            self._sql.close()
            self._sql = None


class SimulationRegistry:
    """The simulations a server publishes, by id; one broken folder is recorded in ``failed``, not fatal."""

    def __init__(self, simulations: Mapping[str, Simulation] | None = None,
                 failed: Mapping[str, str] | None = None) -> None:
        self._sims = dict(simulations or {})
        self.failed = dict(failed or {})

    @classmethod
    def open(cls, paths: Mapping[str, str | Path], **options: Any) -> SimulationRegistry:
        """Open every folder in ``paths`` (id -> folder); ``options`` go to :class:`Simulation`."""
        sims, failed = {}, {}
        for sim_id, path in sorted(paths.items()):
            try:
                sims[sim_id] = Simulation(path, **options)
            except (LabError, OSError, ValueError, KeyError) as exc:
                failed[sim_id] = f"{type(exc).__name__}: {exc}"
        return cls(sims, failed)

    @classmethod
    def from_settings(cls, settings: Any) -> SimulationRegistry:
        """Every simulation under ``settings.data_dir``, with the ``sql_*`` limits of the settings."""
        return cls.discover(settings.data_dir, sql_max_rows=settings.sql_max_rows,
                            sql_timeout=settings.sql_timeout_seconds, sql_memory_limit=settings.sql_memory_limit,
                            sql_threads=settings.sql_threads)

    @classmethod
    def discover(cls, data_dir: str | Path | None, **options: Any) -> SimulationRegistry:
        """Open every cosmology folder under ``data_dir`` (an empty registry when it is None)."""
        if data_dir is None:
            return cls()
        from labservice.datasets.catalog import discover_simulations

        return cls.open(discover_simulations(data_dir), **options)

    def density_urls(self) -> dict[str, str]:
        """``{sim-density: path}`` of each simulation's CIC density, served as a normal field dataset."""
        out = {}
        for sim_id, sim in self.items():
            store = sim.path / "density.zarr"
            if store.is_dir():
                out[f"{sim_id}-density"] = str(store)
        return out

    def __contains__(self, sim_id: object) -> bool:
        return sim_id in self._sims

    def ids(self) -> list[str]:
        return sorted(self._sims)

    def items(self) -> list[tuple[str, Simulation]]:
        return sorted(self._sims.items())

    def get(self, sim_id: str) -> Simulation:
        """The simulation with this id; NotFound with close matches otherwise."""
        sim = self._sims.get(sim_id)
        if sim is None:
            raise unknown("cosmology dataset", sim_id, self._sims)
        return sim

    def close(self) -> None:
        for sim in self._sims.values():
            sim.close()
