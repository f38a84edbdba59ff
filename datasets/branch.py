"""Particle cutouts around every node of a halo's main branch, and the HDF5 file that holds them.

No peer archive offers this: TNG cutouts cover one FOF group at one snapshot, so following a halo back in
time takes one request (and one full-group download) per snapshot. Here one call plans the spheres along
the main branch (depth-first id range ``[id, mainLeafId]``), and each sphere is the same Morton-index read
as a single-halo cutout (:meth:`Simulation.cutout`), so the node at snapshot ``s`` is byte for byte the
single-halo cutout at ``s``.

HDF5 layout (one group per snapshot, the node's catalog row as attributes)::

    /                 attrs: simulation, halo_id, radius, units, BoxSize, n_nodes
    /Header           Gadget-style attrs: BoxSize, MassTable, cosmology
    /snap_030         attrs: every halo column (id, mass, x, y, z, r200c, ...), centre, radius_mpc, Redshift, Time
    /snap_030/Coordinates, Velocities, ParticleIDs, Offsets
    /snap_029 ...

Small branches answer synchronously; large ones run as a ``branch-cutout`` batch job
(:mod:`labservice.jobs.kinds.branch`) that writes the same file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from labservice.errors import InvalidInput

if TYPE_CHECKING:
    from labservice.datasets.simulation import Simulation

__all__ = [
    "MISSING",
    "BranchNode",
    "branch_cutout",
    "branch_nodes",
    "branch_upper_bytes",
    "write_branch_hdf5",
]

# What to do with branch nodes that have no R200c when the radius is in units of R200c.
MISSING = ("error", "skip")


@dataclass(frozen=True)
class BranchNode:
    """One node of a main branch: its halo id and snapshot."""

    halo_id: int
    snap: int


def branch_nodes(
    sim: Simulation, halo_id: int, radius: float, units: str = "r200", missing: str = "error"
) -> list[BranchNode]:
    """The main-branch nodes of ``halo_id`` (the halo first, then back in time) whose spheres are valid.

    Raises
    ------
    InvalidInput
        For a bad radius or unit, or (``missing="error"``) when ``units="r200"`` and some node has no R200c;
        the message lists those snapshots and offers ``units=mpc`` or ``missing=skip``.
    """
    if missing not in MISSING:
        raise InvalidInput(f"missing must be one of {', '.join(MISSING)}; got {missing!r}")
    rows = sim.tree(halo_id, "main-branch", fields=["snap", "r200c"])
    nodes, undefined = [], []
    for hid, snap, r200 in zip(
        rows["id"].to_numpy(), rows["snap"].to_numpy(), rows["r200c"].to_numpy(), strict=True
    ):
        if units == "r200" and not r200 > 0:
            undefined.append(int(snap))
            continue
        nodes.append(BranchNode(int(hid), int(snap)))
    if undefined and missing == "error":
        shown = ", ".join(str(s) for s in undefined[:12]) + (", ..." if len(undefined) > 12 else "")
        raise InvalidInput(
            f"{len(undefined)} of the {len(rows)} main-branch nodes of halo {halo_id} have no R200c (their "
            f"density never reaches 200 rho_crit), at snapshots {shown}; give the radius in Mpc/h with "
            "units=mpc, or pass missing=skip to leave those nodes out"
        )
    for node in nodes:
        sim.cutout_sphere(node.halo_id, None, radius, units)  # checks radius and units on every node
    if not nodes:
        raise InvalidInput(f"no main-branch node of halo {halo_id} has an R200c; use units=mpc")
    return nodes


def branch_upper_bytes(
    sim: Simulation,
    nodes: Iterable[BranchNode],
    radius: float,
    units: str,
    fields: Iterable[str] | None = None,
) -> int:
    """An upper bound on the cutout bytes of all nodes, from the index cells each sphere touches."""
    names = None if fields is None else list(fields)
    return sum(sim.cutout_upper_bytes(n.halo_id, None, radius, units, names) for n in nodes)


def node_cutout(
    sim: Simulation, node: BranchNode, radius: float, units: str, fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """The single-halo cutout of one node plus its catalog row under ``"halo"``."""
    data = sim.cutout(node.halo_id, node.snap, radius, units, None if fields is None else list(fields))
    return {**data, "halo": sim.halo(node.halo_id)}


def branch_cutout(
    sim: Simulation,
    halo_id: int,
    radius: float = 2.0,
    units: str = "r200",
    fields: Iterable[str] | None = None,
    missing: str = "error",
) -> dict[str, Any]:
    """Every particle within ``radius`` of each main-branch node of ``halo_id`` (periodic).

    Returns ``{"simulation", "halo_id", "radius", "units", "nodes": [...]}``; each node is the dict of
    :meth:`Simulation.cutout` (fields, ``Offsets``, ``centre``, ``radius`` in Mpc/h, ``snap``) plus ``halo``,
    its catalog row. Nodes run from the halo back in time.
    """
    nodes = branch_nodes(sim, halo_id, radius, units, missing)
    return {
        "simulation": sim.id,
        "halo_id": int(halo_id),
        "radius": float(radius),
        "units": units,
        "nodes": [node_cutout(sim, n, radius, units, fields) for n in nodes],
    }


def _attr(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_branch_hdf5(
    target: str | IO[bytes], info: dict[str, Any], sim_info: dict[str, Any], nodes: Iterable[dict[str, Any]]
) -> int:
    """Write a branch cutout as HDF5 (layout in the module docstring); returns the number of node groups.

    Parameters
    ----------
    target : path or binary file object
    info : dict
        ``simulation``, ``halo_id``, ``radius``, ``units`` of the request.
    sim_info : dict
        The simulation's ``simulation.json`` content (box, particle mass, cosmology, snapshots).
    nodes : iterable of dict
        Node cutouts as :func:`node_cutout` returns them; consumed one at a time (a job streams them).
    """
    import h5py

    snaps = {int(s["snap"]): s for s in sim_info["snapshots"]}
    count = 0
    with h5py.File(target, "w") as f:
        for key in ("simulation", "halo_id", "radius", "units"):
            f.attrs[key] = info[key]
        f.attrs["BoxSize"] = float(sim_info["box"])
        header = f.create_group("Header")
        header.attrs["BoxSize"] = float(sim_info["box"])
        header.attrs["MassTable"] = np.array([0.0, sim_info["particle_mass"] / 1e10, 0, 0, 0, 0])
        cos = sim_info.get("cosmology", {})
        for ours, gadget in (("omega_m", "Omega0"), ("omega_l", "OmegaLambda"), ("h", "HubbleParam")):
            if ours in cos:
                header.attrs[gadget] = float(cos[ours])
        for node in nodes:
            snap = int(node["snap"])
            group = f.create_group(f"snap_{snap:03d}")
            for key, value in node["halo"].items():
                if value is not None:  # NaN (no R200c) is kept: HDF5 stores it
                    group.attrs[key] = _attr(value)
            group.attrs["centre"] = np.asarray(node["centre"], dtype=np.float64)
            group.attrs["radius_mpc"] = float(node["radius"])
            group.attrs["Redshift"] = float(snaps[snap]["redshift"])
            group.attrs["Time"] = float(snaps[snap]["a"])
            for key, value in node.items():
                if isinstance(value, np.ndarray) and key != "centre":
                    group.create_dataset(key, data=value)
            count += 1
        f.attrs["n_nodes"] = count
    return count
