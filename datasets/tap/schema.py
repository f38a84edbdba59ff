"""TAP_SCHEMA for every simulation's tables: schemas, tables, columns (units, UCDs, descriptions), keys.

Each simulation is a schema named by its id (``cosmo64``) holding ``halos``, ``trees`` and ``snapshots``
(the same tables as the SQL endpoint). The rows built here are loaded into the TAP engine as the
``TAP_SCHEMA`` tables, so TAP_SCHEMA is queryable through TAP itself, and the VOSI ``/tables`` document and
the VOTable FIELD metadata come from the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from labservice.datasets.sql import TREE_VIEW_COLUMNS as _TREE_COLUMNS

# column -> (unit, UCD, description). Units follow simulation.json: Mpc/h comoving, km/s peculiar, Msun/h.
HALO_COLUMNS: dict[str, tuple[str, str, str]] = {
    "id": ("", "meta.id;meta.main", "Halo id: depth-first order of the merger forest (a subtree is an id range)"),
    "snap": ("", "time.epoch;meta.number", "Snapshot number (the last one is z = 0)"),
    "fof_rank": ("", "meta.number", "Rank of the halo by mass within its snapshot (0 is the most massive)"),
    "mass": ("Msun/h", "phys.mass", "FOF mass: member particles times the particle mass"),
    "n_particles": ("", "meta.number", "Number of FOF member particles"),
    "x": ("Mpc/h", "pos.cartesian.x", "Centre (potential minimum), comoving, periodic box"),
    "y": ("Mpc/h", "pos.cartesian.y", "Centre (potential minimum), comoving, periodic box"),
    "z": ("Mpc/h", "pos.cartesian.z", "Centre (potential minimum), comoving, periodic box"),
    "x_com": ("Mpc/h", "pos.cartesian.x;pos.barycenter", "Centre of mass, comoving"),
    "y_com": ("Mpc/h", "pos.cartesian.y;pos.barycenter", "Centre of mass, comoving"),
    "z_com": ("Mpc/h", "pos.cartesian.z;pos.barycenter", "Centre of mass, comoving"),
    "vx": ("km/s", "phys.veloc;pos.cartesian.x", "Mean peculiar velocity of the members"),
    "vy": ("km/s", "phys.veloc;pos.cartesian.y", "Mean peculiar velocity of the members"),
    "vz": ("km/s", "phys.veloc;pos.cartesian.z", "Mean peculiar velocity of the members"),
    "m200c": ("Msun/h", "phys.mass", "Mass within R200c; NULL where the density never reaches 200 rho_crit"),
    "r200c": ("Mpc/h", "phys.size.radius", "Radius enclosing 200 times the critical density; NULL if none"),
    "vmax": ("km/s", "phys.veloc.rotat;stat.max", "Peak circular velocity"),
    "vdisp": ("km/s", "phys.veloc.dispersion", "Velocity dispersion of the members"),
    "env_density": ("", "phys.density;arith.ratio", "Local density over the mean at the centre"),
    "env_density_smooth": ("", "phys.density;arith.ratio", "Smoothed environment density over the mean"),
    "a": ("", "time.epoch", "Scale factor of the snapshot"),
    "redshift": ("", "src.redshift", "Redshift of the snapshot"),
    "member_start": ("", "meta.code", "Offset of the first member in the snapshot's particle order"),
    "cell_ix": ("", "pos.cartesian.x;meta.code", "Morton index cell of the centre (x)"),
    "cell_iy": ("", "pos.cartesian.y;meta.code", "Morton index cell of the centre (y)"),
    "cell_iz": ("", "pos.cartesian.z;meta.code", "Morton index cell of the centre (z)"),
    "morton_key": ("", "meta.code", "Morton key of the centre's index cell"),
    "shared_fraction": ("", "arith.ratio", "Fraction of the members that went to the descendant"),
    "descendantId": ("", "meta.id", "Id of the descendant halo, -1 at z = 0 or when none"),
    "firstProgenitorId": ("", "meta.id", "Id of the main (most massive) progenitor, -1 when none"),
    "nextProgenitorId": ("", "meta.id", "Id of the next progenitor of the same descendant, -1 when none"),
    "lastProgenitorId": ("", "meta.id", "Largest id in this halo's subtree: progenitors are [id, lastProgenitorId]"),
    "mainLeafId": ("", "meta.id", "Id of the earliest halo on the main branch: the branch is [id, mainLeafId]"),
    "treeRootId": ("", "meta.id", "Id of the z = 0 root of the tree"),
}
SNAPSHOT_COLUMNS: dict[str, tuple[str, str, str]] = {
    "snap": ("", "time.epoch;meta.number", "Snapshot number"),
    "a": ("", "time.epoch", "Scale factor"),
    "redshift": ("", "src.redshift", "Redshift"),
    "time": ("Gyr", "time.age", "Cosmic time since the big bang (flat LCDM)"),
    "n_halos": ("", "meta.number", "Number of FOF halos in the snapshot"),
}
TABLE_DESCRIPTIONS = {
    "halos": "Every FOF halo of every snapshot: catalog and merger-tree columns (one row per halo)",
    "trees": "The merger-tree columns of halos (depth-first ids: a subtree is the id range [id, lastProgenitorId])",
    "snapshots": "The snapshots: scale factor, redshift, cosmic time and halo count",
}
TAP = "TAP_SCHEMA"
_DTYPES = {"i": "long", "u": "long", "f": "double", "b": "boolean"}


@dataclass(frozen=True)
class Column:
    """One column as TAP_SCHEMA.columns describes it."""

    table: str  # qualified: schema.table
    name: str
    datatype: str
    unit: str = ""
    ucd: str = ""
    description: str = ""
    arraysize: str | None = None
    indexed: bool = False


def _datatype(dtype: object) -> tuple[str, str | None]:
    kind = getattr(dtype, "kind", "O")
    if kind in _DTYPES:
        return _DTYPES[kind], None
    return "char", "*"


def _table_columns(qualified: str, frame: pd.DataFrame, meta: dict[str, tuple[str, str, str]]) -> list[Column]:
    cols = []
    for name in frame.columns:
        unit, ucd, desc = meta.get(name, ("", "", ""))
        datatype, size = _datatype(frame[name].dtype)
        cols.append(Column(qualified, name, datatype, unit, ucd, desc, size, name in ("id", "snap")))
    return cols


def _tap_schema_columns() -> dict[str, list[tuple[str, str, str]]]:
    """TAP_SCHEMA's own tables: name -> [(column, datatype, description)] (TAP 1.1 section 4)."""
    c, i = "char", "int"
    return {
        "schemas": [("schema_name", c, "schema name"), ("utype", c, ""), ("description", c, "what it holds"),
                    ("schema_index", i, "order")],
        "tables": [("schema_name", c, ""), ("table_name", c, "qualified table name"), ("table_type", c, ""),
                   ("utype", c, ""), ("description", c, ""), ("table_index", i, "order")],
        "columns": [("table_name", c, ""), ("column_name", c, ""), ("utype", c, ""), ("ucd", c, ""),
                    ("unit", c, ""), ("description", c, ""), ("datatype", c, ""), ("arraysize", c, ""),
                    ("xtype", c, ""), ("size", i, ""), ("principal", i, ""), ("indexed", i, ""), ("std", i, ""),
                    ("column_index", i, "")],
        "keys": [("key_id", c, ""), ("from_table", c, ""), ("target_table", c, ""), ("utype", c, ""),
                 ("description", c, "")],
        "key_columns": [("key_id", c, ""), ("from_column", c, ""), ("target_column", c, "")],
    }


class TapSchema:
    """TAP_SCHEMA of a set of simulations.

    Parameters
    ----------
    sims : dict
        Simulation id -> ``(halos frame, snapshots frame)`` (only the dtypes of ``halos`` are read).
    """

    def __init__(self, sims: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> None:
        self.sims = sorted(sims)
        self.columns: dict[str, list[Column]] = {}  # qualified table -> columns, in order
        self.descriptions: dict[str, str] = {}
        for sim in self.sims:
            halos, snaps = sims[sim]
            self.columns[f"{sim}.halos"] = _table_columns(f"{sim}.halos", halos, HALO_COLUMNS)
            trees = [c for c in halos.columns if c in _TREE_COLUMNS]
            self.columns[f"{sim}.trees"] = _table_columns(f"{sim}.trees", halos[trees], HALO_COLUMNS)
            self.columns[f"{sim}.snapshots"] = _table_columns(f"{sim}.snapshots", snaps, SNAPSHOT_COLUMNS)
            for t, d in TABLE_DESCRIPTIONS.items():
                self.descriptions[f"{sim}.{t}"] = f"{sim}: {d}"
        for t, cols in _tap_schema_columns().items():
            q = f"{TAP}.{t}"
            self.columns[q] = [Column(q, n, "int" if dt == "int" else "char", "", "", d,
                                      None if dt == "int" else "*") for n, dt, d in cols]
            self.descriptions[q] = f"TAP_SCHEMA: the {t} of this service"

    def schema_of(self, table: str) -> str:
        return table.split(".", 1)[0]

    def tables(self) -> list[str]:
        return list(self.columns)

    def find(self, table: str) -> str | None:
        """The qualified name matching ``table`` case-insensitively (ADQL names are), or None."""
        low = table.lower()
        return next((t for t in self.columns if t.lower() == low), None)

    def keys(self) -> list[tuple[str, str, str, str, str, str]]:
        """(key_id, from_table, target_table, description, from_column, target_column)."""
        out = []
        for sim in self.sims:
            out += [
                (f"{sim}_trees_halos", f"{sim}.trees", f"{sim}.halos", "a tree row is a halo", "id", "id"),
                (f"{sim}_halos_snapshots", f"{sim}.halos", f"{sim}.snapshots", "the halo's snapshot", "snap", "snap"),
                (f"{sim}_trees_snapshots", f"{sim}.trees", f"{sim}.snapshots", "the node's snapshot", "snap", "snap"),
                (f"{sim}_halos_descendant", f"{sim}.halos", f"{sim}.halos", "the descendant halo", "descendantId",
                 "id"),
            ]
        return out

    def frames(self) -> dict[str, pd.DataFrame]:
        """The TAP_SCHEMA tables as frames (loaded into the engine under the TAP_SCHEMA schema)."""
        schemas = [(s, None, f"Simulation {s}: halo catalogs, merger trees, snapshots", i)
                   for i, s in enumerate(self.sims)] + [(TAP, None, "Metadata of this TAP service", len(self.sims))]
        tables = [(self.schema_of(t), t, "table" if not t.endswith(".trees") else "view", None,
                   self.descriptions[t], i) for i, t in enumerate(self.columns)]
        columns = [(c.table, c.name, None, c.ucd or None, c.unit or None, c.description or None, c.datatype,
                    c.arraysize, None, None, 1, int(c.indexed), int(c.table.startswith(TAP + ".")), j)
                   for cols in self.columns.values() for j, c in enumerate(cols)]
        keys = self.keys()
        spec = _tap_schema_columns()

        def frame(name: str, rows: list[tuple]) -> pd.DataFrame:
            names = [n for n, _, _ in spec[name]]
            f = pd.DataFrame(rows, columns=names)
            for n, dt, _ in spec[name]:
                f[n] = f[n].astype("Int32" if dt == "int" else "string")
            return f

        return {
            "schemas": frame("schemas", schemas),
            "tables": frame("tables", tables),
            "columns": frame("columns", columns),
            "keys": frame("keys", [(k, f, t, None, d) for k, f, t, d, _, _ in keys]),
            "key_columns": frame("key_columns", [(k, fc, tc) for k, _, _, _, fc, tc in keys]),
        }

