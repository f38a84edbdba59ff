"""Cosmology simulations: snapshots, halo search, merger trees, mergers, particle cutouts and SQL.

>>> sim = lab.dataset("cosmo64")
>>> big = sim.halos(snap=30, mass__gt=1e13, order_by="-mass")
>>> branch = sim.halo(int(big.id[0])).main_branch()
>>> parts = sim.halo(int(big.id[0])).cutout(radius=2, units="r200")
>>> history = sim.halo(int(big.id[0])).branch_cutout(radius=2, units="r200")   # every main-branch node

Tables come back as pandas DataFrames (install ``labservice-client[all]``); they travel as msgpack columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from labclient.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from labclient.lab import Lab

CUTOUT_FIELDS = ("Coordinates", "Velocities", "ParticleIDs")

if TYPE_CHECKING:
    from labclient.jobs import Job


def _frame(payload: dict[str, Any]) -> pd.DataFrame:
    """A msgpack table ``{columns, data: {col: array or list}}`` as a DataFrame (columns in order)."""
    from labclient._extras import require

    pd = require("pandas", "tables")
    data = {
        c: np.asarray(payload["data"][c])
        if isinstance(payload["data"][c], np.ndarray)
        else payload["data"][c]
        for c in payload["columns"]
    }
    return pd.DataFrame(data, columns=payload["columns"])


def _join(value: str | Iterable[Any] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ",".join(str(v) for v in value)


class RemoteSimulation:
    """A cosmology simulation served by labservice; get one with ``Lab.dataset(id)``.

    Attributes
    ----------
    id : str
    info : dict
        Box, cosmology, particle mass, units, snapshot range, catalog ``columns`` and this caller's ``limits``.
    """

    def __init__(self, lab: Lab, info: dict[str, Any]) -> None:
        self.lab = lab
        self.info = info
        self.id: str = info["id"]
        self.box = float(info["box"])
        self.columns: list[str] = list(info.get("columns", []))
        self.limits: dict[str, Any] = info.get("limits", {})

    def __repr__(self) -> str:
        return f"<RemoteSimulation {self.id!r} box={self.box:g} Mpc/h halos={self.info.get('n_halos')}>"

    @property
    def _base(self) -> str:
        return f"/api/v1/datasets/{self.id}"

    def _table(self, path: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        query["format"] = "msgpack"
        return _frame(self.lab.transport.call("GET", self._base + path, params=query))

    def snapshots(self) -> pd.DataFrame:
        """snap, a, redshift, time (Gyr) and n_halos of every snapshot."""
        return self._table("/snapshots")

    def halos(
        self,
        snap: int,
        *,
        near: Iterable[float] | None = None,
        box: Iterable[float] | None = None,
        order_by: str | Iterable[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        fields: Iterable[str] | None = None,
        **filters: Any,
    ) -> pd.DataFrame:
        """Search one snapshot's halos.

        Parameters
        ----------
        snap : int
            Snapshot number.
        near : (x, y, z, r), optional
            Within ``r`` Mpc/h of a point, periodic; adds a ``distance`` column.
        box : (x0, y0, z0, x1, y1, z1), optional
            Inside a box (periodic wrap allowed).
        order_by : str or list of str
            Columns, ``"-mass"`` for descending.
        limit, offset : int
            Page of the result.
        fields : list of str, optional
            Columns to return.
        **filters
            ``mass__gt=1e13``, ``n_particles__ge=50``, ``fof_rank=0``: operators gt, lt, ge, le, eq, ne.
        """
        params = {
            "near": _join(near),
            "box": _join(box),
            "order_by": _join(order_by),
            "limit": int(limit),
            "offset": int(offset),
            "fields": _join(fields),
        }
        for key, value in filters.items():
            if key in params:
                raise InvalidRequest(f"{key!r} is a search parameter; pass it once")
            params[key] = value
        return self._table(f"/snapshots/{int(snap)}/halos", params)

    def halo(self, halo_id: int) -> RemoteHalo:
        """One halo by id (ids are unique across snapshots); its row is fetched on first use."""
        return RemoteHalo(self, int(halo_id))

    def sql(self, query: str, truncate: bool = False, into: str | None = None, job: bool = False,
            format: str = "parquet") -> Any:
        """Read-only SQL over the tables halos, trees and snapshots.

        More rows than the server's cap (``info["sql"]["max_rows"]``) raise LimitError, unless ``truncate=True``
        asks for the first rows; ``df.attrs["truncated"]`` then says whether rows were cut. ``into="name"``
        saves the result as your MyDB table ``name`` instead and returns its description (see ``lab.mydb``);
        ``job=True`` submits the query as a batch job (no row cap, ``format`` parquet, csv or hdf5).
        """
        if job:
            return self.lab.mydb.submit(query, sim=self.id, into=into, format=format)
        if into is not None:
            return self.lab.transport.call(
                "POST", self._base + "/sql", body={"sql": query, "into": into}, binary=False, idempotent=True
            )
        params = {"format": "msgpack", "truncate": "true" if truncate else "false"}
        payload = self.lab.transport.call(
            "POST", self._base + "/sql", body={"sql": query}, params=params, idempotent=True
        )
        frame = _frame(payload)
        frame.attrs["truncated"] = bool(payload.get("truncated", False))
        return frame


class RemoteHalo:
    """One halo of a :class:`RemoteSimulation`: its row, tree, mergers and particle cutouts."""

    def __init__(self, sim: RemoteSimulation, halo_id: int) -> None:
        self.sim = sim
        self.id = halo_id
        self._info: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<RemoteHalo {self.id} of {self.sim.id!r}>"

    @property
    def info(self) -> dict[str, Any]:
        """Every catalog and tree column of the halo (fetched once)."""
        if self._info is None:
            self._info = self.sim.lab.transport.call(
                "GET", f"{self.sim._base}/halos/{self.id}", binary=False
            )["halo"]
        return self._info

    @property
    def snap(self) -> int:
        return int(self.info["snap"])

    def tree(
        self, kind: str = "main-branch", snap: int | None = None, fields: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Tree rows: kind progenitors, main-branch, descendants or full; optionally one snapshot only."""
        return self.sim._table(
            f"/halos/{self.id}/tree", {"kind": kind, "snap": snap, "fields": _join(fields)}
        )

    def main_branch(self, fields: Iterable[str] | None = None) -> pd.DataFrame:
        """The halo and its main progenitors, back in time."""
        return self.tree("main-branch", fields=fields)

    def progenitors(self, snap: int | None = None, fields: Iterable[str] | None = None) -> pd.DataFrame:
        """The halo and all its progenitors (optionally only those at ``snap``)."""
        return self.tree("progenitors", snap=snap, fields=fields)

    def descendants(self, fields: Iterable[str] | None = None) -> pd.DataFrame:
        """The halo and its descendants, forward in time."""
        return self.tree("descendants", fields=fields)

    def full_tree(self, fields: Iterable[str] | None = None) -> pd.DataFrame:
        """Every node of the halo's tree."""
        return self.tree("full", fields=fields)

    def mergers(self, min_ratio: float = 0.2) -> pd.DataFrame:
        """Merger events along the main branch with progenitor mass ratio at least ``min_ratio``."""
        return self.sim._table(f"/halos/{self.id}/mergers", {"min_ratio": min_ratio})

    def cutout(
        self,
        radius: float = 2.0,
        units: str = "r200",
        fields: Iterable[str] | None = None,
        as_xarray: bool = False,
    ) -> Any:
        """Every particle within ``radius`` of the halo centre (periodic), not only the FOF members.

        Returns a dict with the requested fields, ``Offsets`` (displacement from the centre, Mpc/h) and
        ``centre``, ``radius`` (Mpc/h), ``snap``, ``box``; or an xarray Dataset with ``as_xarray=True``.
        """
        params = {"radius": radius, "units": units, "fields": _join(fields), "format": "msgpack"}
        params = {k: v for k, v in params.items() if v is not None}
        data = self.sim.lab.transport.call(
            "GET", f"{self.sim._base}/snapshots/{self.snap}/halos/{self.id}/cutout", params=params
        )
        if not as_xarray:
            return data
        from labclient._extras import require

        xr = require("xarray", "particle cutouts as xarray")

        arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray) and k != "centre"}
        variables = {
            k: (("particle", "axis") if v.ndim == 2 else ("particle",), v) for k, v in arrays.items()
        }
        attrs = {k: v for k, v in data.items() if k not in arrays}
        return xr.Dataset(variables, coords={"axis": ["x", "y", "z"]}, attrs=attrs)

    def branch_cutout(
        self,
        radius: float = 2.0,
        units: str = "r200",
        fields: Iterable[str] | None = None,
        missing: str = "error",
        job: bool = False,
    ) -> dict[str, Any] | Job:
        """Particles within ``radius`` of every node of the halo's main branch (the halo first, back in time).

        Returns ``{"halo_id", "radius", "units", "count", "nodes": [...]}``; each node is a dict like
        :meth:`cutout` returns plus ``halo``, that node's catalog row. With ``units="r200"``, nodes without an
        R200c make a 422 unless ``missing="skip"``. Branches over your synchronous cutout limit answer 413:
        pass ``job=True`` to run it as a batch job instead; ``job.wait().download(folder)`` then fetches
        ``branch_cutout.hdf5`` (read it with :func:`read_branch_cutout`).
        """
        if job:
            from labclient.jobs import submit_job

            request: dict[str, Any] = {
                "kind": "branch-cutout",
                "dataset": self.sim.id,
                "halo_id": self.id,
                "radius": float(radius),
                "units": units,
                "missing": missing,
            }
            if fields is not None:
                request["fields"] = list(fields)
            return submit_job(self.sim.lab, request)
        params = {
            "radius": radius,
            "units": units,
            "fields": _join(fields),
            "missing": missing,
            "format": "msgpack",
        }
        params = {k: v for k, v in params.items() if v is not None}
        return self.sim.lab.transport.call(
            "GET", f"{self.sim._base}/halos/{self.id}/branch-cutout", params=params
        )


def read_branch_cutout(path: Any) -> dict[str, Any]:
    """Read a ``branch_cutout.hdf5`` (from a branch-cutout job or ``format=hdf5``) into the dict
    :meth:`RemoteHalo.branch_cutout` returns: one node per snapshot group, the halo first, back in time."""
    from labclient._extras import require

    h5py = require("h5py", "branch-cutout files")

    with h5py.File(path, "r") as f:
        info = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        nodes = []
        for name in sorted((k for k in f if k.startswith("snap_")), reverse=True):
            group = f[name]
            halo = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in group.attrs.items()}
            node: dict[str, Any] = {k: group[k][()] for k in group}
            node.update(
                centre=np.asarray(halo.pop("centre")), radius=halo.pop("radius_mpc"), snap=int(halo["snap"])
            )
            for extra in ("Redshift", "Time"):  # the row already has redshift and a
                halo.pop(extra, None)
            node["halo"] = halo
            nodes.append(node)
    info["count"] = int(sum(n["Offsets"].shape[0] for n in nodes if "Offsets" in n))
    return {**info, "nodes": nodes}
