"""The ``branch-cutout`` batch job: particle cutouts around every main-branch node of a halo, as one HDF5 file.

The kind checks the request against the simulation's merger tree, plans one part per branch node and
runs like any other job kind. Each task
cuts one node's sphere out of its Morton-ordered snapshot (the same call as a single-halo cutout), stores it
as an ``.npz`` part and commits a part record with the node's catalog row; a retried task finds its record
and returns it. The finalizer streams the parts, in branch order, into ``branch_cutout.hdf5`` (layout in
:mod:`labservice.datasets.branch`) and writes the manifest.
"""

from __future__ import annotations

import io
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from labservice.errors import NotFound, unknown
from labservice.jobs import parts
from labservice.jobs.kinds.base import JobContext, JobKind, Plan
from labservice.jobs.parts import with_retries

RESULT = "branch_cutout.hdf5"
_sims: OrderedDict[str, Any] = OrderedDict()  # per worker process: simulations opened once


class BranchCutoutJobRequest(BaseModel):
    """Particles within a radius of every main-branch node of a halo (see GET .../branch-cutout)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["branch-cutout"] = "branch-cutout"
    dataset: str = Field(description="Cosmology simulation id.")
    halo_id: int = Field(description="The halo whose main branch is followed back in time.")
    radius: FiniteFloat = Field(default=2.0, gt=0, description="Sphere radius, in units of R200c or Mpc/h.")
    units: Literal["r200", "mpc"] = "r200"
    fields: list[str] | None = Field(default=None, description="Particle fields (default all).")
    missing: Literal["error", "skip"] = Field(
        default="error", description="With units=r200, nodes without R200c: refuse the job, or skip them."
    )


def simulation_resolver(data_dir: str | os.PathLike[str] | None) -> Callable[[str], Path]:
    """Map a simulation id to its folder under ``data_dir`` (NotFound with close matches otherwise)."""

    def resolve(sim_id: str) -> Path:
        from labservice.datasets.catalog import discover_simulations

        found = discover_simulations(data_dir) if data_dir is not None else {}
        if sim_id not in found:
            raise unknown("cosmology dataset", sim_id, found)
        return found[sim_id]

    return resolve


def open_simulation(path: str | os.PathLike[str]) -> Any:
    """A :class:`~labservice.datasets.simulation.Simulation`, opened once per process."""
    from labservice.datasets.simulation import Simulation

    key = str(Path(path).resolve())
    return parts.cached(_sims, key, lambda: Simulation(key))


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def run_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Cut out one branch node's sphere and commit it (idempotent: a committed part is returned as is)."""
    from labservice.datasets.branch import BranchNode, node_cutout

    scratch, job, part = parts.scratch_of(spec), spec["job"], spec["part"]
    done = parts.committed(scratch, job, part)
    if done is not None:
        return done
    sim = with_retries(lambda: open_simulation(spec["sim_path"]), "opening the simulation")
    node = BranchNode(spec["halo_id"], spec["snap"])
    data = with_retries(
        lambda: node_cutout(sim, node, spec["radius"], spec["units"], spec["fields"]), "reading the particles"
    )
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray) and k != "centre"}
    entry = parts.put_object(
        scratch, job, parts.part_name(part, "npz"), _npz_bytes(arrays), "writing a node cutout"
    )
    record = {
        "part": part,
        "snap": int(data["snap"]),
        "radius": float(data["radius"]),
        "centre": [float(c) for c in data["centre"]],
        "halo": data["halo"],
        "files": [entry],
    }
    return parts.commit(scratch, job, part, record)


def _nodes(spec: dict[str, Any], records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    scratch, job = parts.scratch_of(spec), spec["job"]
    for r in sorted(records, key=lambda r: r["part"]):
        raw = with_retries(
            lambda r=r: scratch.read_bytes(job, parts.part_name(r["part"], "npz")), "reading a node cutout"
        )
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        yield {
            **arrays,
            "centre": np.asarray(r["centre"]),
            "radius": r["radius"],
            "snap": r["snap"],
            "halo": r["halo"],
        }


def finalize(spec: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream the node parts into ``branch_cutout.hdf5`` and write the manifest; returns the file entries."""
    from labservice.datasets.branch import write_branch_hdf5

    scratch, job = parts.scratch_of(spec), spec["job"]
    info_path = Path(spec["sim_path"]) / "simulation.json"
    if not info_path.is_file():
        raise NotFound(f"the simulation folder {spec['sim_path']} is gone")
    sim_info = json.loads(info_path.read_text())
    entry = parts.put_result(
        scratch,
        job,
        RESULT,
        lambda tmp: write_branch_hdf5(tmp, spec["info"], sim_info, _nodes(spec, records)),
    )
    return parts.write_manifest(scratch, job, [entry.to_dict() | {"format": "hdf5"}])


class BranchCutout(JobKind):
    name = "branch-cutout"
    request = BranchCutoutJobRequest

    def check(self, ctx: JobContext, req: BranchCutoutJobRequest, points: np.ndarray | None) -> int:
        """Check the request against the simulation; returns an upper bound on the output bytes."""
        from labservice.datasets.branch import branch_nodes, branch_upper_bytes

        sim = open_simulation(ctx.simulation_path(req.dataset))
        nodes = branch_nodes(sim, req.halo_id, req.radius, req.units, req.missing)
        return branch_upper_bytes(sim, nodes, req.radius, req.units, req.fields)

    def plan(self, ctx: JobContext, job_id: str, req: BranchCutoutJobRequest) -> Plan:
        """One part per branch node (the halo first, back in time)."""
        from labservice.datasets.branch import branch_nodes

        sim_path = ctx.simulation_path(req.dataset)
        sim = open_simulation(sim_path)
        nodes = branch_nodes(sim, req.halo_id, req.radius, req.units, req.missing)
        base = ctx.base_spec(job_id) | {"sim_path": str(sim_path)}
        call = {"radius": req.radius, "units": req.units, "fields": req.fields}
        specs = [base | call | {"part": i, "halo_id": n.halo_id, "snap": n.snap} for i, n in enumerate(nodes)]
        info = {"simulation": sim.id, "halo_id": req.halo_id, "radius": req.radius, "units": req.units}
        return Plan(specs, base | {"info": info})

    run_part = staticmethod(run_part)
    finalize = staticmethod(finalize)


KIND = BranchCutout()
