"""The ``cutout`` job kind: a region of one or more variables at stored times, any size.

Output is one zarr v3 group (``cutout.zarr``): one array per variable, indexed
``[time, z, y, x, component]``, sharded so that one shard is one task region and the inner chunks of a
shard are in Morton order (zarr's sharding codec). The planner creates the group's skeleton once; each
part encodes its shards with the array's own metadata and stores each shard as one object, so parts never
share an object. On a local scratch a shard is streamed: each inner chunk is read, hashed and written in
turn, while it is in the CPU's cache (a working zarr, deleted at the end, is not hashed). Parts are contiguous Morton runs of shards. The finalizer consolidates the
metadata and copies the group into HDF5+XDMF or NetCDF when asked (:mod:`labservice.jobs.outputs`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator

from labservice.errors import InvalidInput, StorageUnavailable
from labservice.jobs import parts
from labservice.jobs.kinds.base import JobContext, JobKind, Plan
from labservice.jobs.outputs import JobFormat
from labservice.jobs.parts import PARTS, WORK, with_retries

Range = tuple[int | None, int | None, int | None] | tuple[int | None, int | None] | str | None
Format = JobFormat  # the format registry's job formats


class CutoutJobRequest(BaseModel):
    """A cutout of one or more variables at one or more stored times.

    ``time`` and ``format`` are spelled as in the synchronous cutout; ``times`` and ``formats`` take lists.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["cutout"] = "cutout"
    dataset: str = Field(description="Dataset id.")
    variables: list[str] = Field(default_factory=list, description="Variables to cut out.")
    variable: str | None = Field(default=None, description="One variable (instead of variables).")
    time: FiniteFloat | None = Field(default=None, description="One stored time (instead of times).")
    times: list[FiniteFloat] | None = Field(default=None, description="Stored times; default the first one.")
    time_indices: list[int] | None = Field(default=None, description="Stored time indices instead of times.")
    x: Range = None
    y: Range = None
    z: Range = None
    format: Format | None = Field(default=None, description="One output format (instead of formats).")
    formats: list[Format] | None = Field(
        default=None, min_length=1, description="Output formats; default zarr."
    )

    @model_validator(mode="after")
    def _one_spelling(self) -> CutoutJobRequest:
        if self.variable is not None and self.variable not in self.variables:
            self.variables = [self.variable, *self.variables]
        if not self.variables:
            raise ValueError("give variables (a list) or variable (one name)")
        self.variables = list(dict.fromkeys(self.variables))
        # The singular forms fold into the lists, so the stored request has one spelling.
        if self.time is not None:
            if self.times is not None:
                raise ValueError("give 'time' (one stored time) or 'times' (a list of them), not both")
            self.times, self.time = [self.time], None
        if self.format is not None:
            if self.formats is not None:
                raise ValueError("give 'format' (one format) or 'formats' (a list of them), not both")
            self.formats, self.format = [self.format], None
        if self.formats is None:
            self.formats = ["zarr"]
        return self


def time_indices(req: CutoutJobRequest, meta: Any) -> list[int]:
    from labservice.cutout.region import time_index

    if req.time_indices is not None:
        bad = [t for t in req.time_indices if not 0 <= t < len(meta.times)]
        if bad:
            raise InvalidInput(f"time_indices must be in [0, {len(meta.times) - 1}]; got {bad[0]}")
        return list(req.time_indices)
    if req.times is not None:
        return [time_index(meta, t) for t in req.times]
    return [0]


def shard_blocks(counts: tuple[int, int, int], shard: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Output shard indices (iz, iy, ix) of a (nz, ny, nx) output, in Morton order of the shard index."""
    from labservice.storage.morton import morton_argsort

    nb = [-(-n // s) for n, s in zip(counts, shard, strict=True)]
    iz, iy, ix = (a.ravel() for a in np.meshgrid(*(np.arange(n) for n in nb), indexing="ij"))
    order = morton_argsort(ix, iy, iz)
    return [(int(iz[i]), int(iy[i]), int(ix[i])) for i in order]


def run_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Read the source region of each output shard in ``spec["blocks"]`` and store it as one shard object.

    Each block is ``{"variable", "t_in", "t_out", "shard": [iz, iy, ix], "x": [start, stop, step], "y",
    "z"}`` with source index ranges already cut to the shard's output extent. ``spec`` also carries the
    output array's spatial ``shape``, ``shard_shape`` and ``chunk_shape`` (z, y, x).
    """
    from labservice.cutout.region import read_cutout
    from labservice.jobs.outputs import encode_shard

    scratch, job, part = parts.scratch_of(spec), spec["job"], spec["part"]
    done = parts.committed(scratch, job, part)
    if done is not None:
        return done
    reader = with_retries(
        lambda: parts.source_reader(spec["dataset_url"], spec.get("dataset_options")), "opening the dataset"
    )
    shape, shard, chunk = (tuple(spec[k]) for k in ("shape", "shard_shape", "chunk_shape"))
    final = not spec["zarr_path"].startswith(f"{WORK}/")  # a working zarr is deleted: no checksums
    entries: list[dict[str, Any]] = []
    for block in spec["blocks"]:
        iz, iy, ix = block["shard"]
        corner = (iz * shard[0], iy * shard[1], ix * shard[2])
        source = _aligned_chunks(reader, block, chunk)
        if source is None:
            source = with_retries(
                lambda b=block: (
                    read_cutout(
                        reader, b["variable"], b["t_in"], x=tuple(b["x"]), y=tuple(b["y"]), z=tuple(b["z"])
                    ).data
                ),
                "reading the source region",
            )
        name = f"{spec['zarr_path']}/{block['variable']}/c/{block['t_out']}/{iz}/{iy}/{ix}/0"
        parts.check_live(scratch, job)
        # The shard is encoded as it is written (a generator), so a retry encodes it again.
        entry = with_retries(
            lambda n=name, s=source, c=corner: scratch.put_parts(
                job, n, encode_shard(s, c, shape, shard, chunk), checksum=final
            ),
            "writing an output shard",
        )
        del source
        entries.append(entry.to_dict())
    return parts.commit(scratch, job, part, {"part": part, "files": entries})


def _aligned_chunks(reader: Any, block: dict[str, Any], chunk: tuple[int, ...]) -> Callable[..., Any] | None:
    """A function handing out the reader's own chunks when output inner chunks are exactly source inner
    chunks (stride 1, same size, aligned, no wrap, float32); None otherwise (read_cutout then assembles)."""
    var, t = block["variable"], block["t_in"]
    meta = reader.meta
    if tuple(meta.array_chunks(var)[1:4]) != tuple(chunk) or meta.variables[var].dtype != "float32":
        return None
    ranges = [block[a] for a in ("z", "y", "x")]
    for (start, stop, step), c, n in zip(ranges, chunk, meta.grid.array_shape, strict=True):
        # The block must end on a chunk boundary or the grid's end, so no chunk holds values past it.
        if step != 1 or start % c or start < 0 or stop > n or (stop % c and stop != n):
            return None
    first = tuple(r[0] // c for r, c in zip(ranges, chunk, strict=True))

    def get(local: tuple[int, int, int]) -> np.ndarray:
        idx = (first[0] + local[0], first[1] + local[1], first[2] + local[2])
        return with_retries(lambda: reader.chunk(var, t, idx), "reading a source chunk")

    return get


def finalize(spec: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consolidate the zarr metadata, build HDF5+XDMF or NetCDF if asked, write the manifest.

    Returns the file entries of the job (top-level results first); the manifest lists every object.
    """
    import zarr

    scratch, job = parts.scratch_of(spec), spec["job"]
    zarr_path = spec["zarr_path"]
    store_url = scratch.job_url(job, zarr_path)
    with warnings.catch_warnings():
        # Consolidated metadata is not in the zarr v3 spec yet, but xarray reads it and needs no listing.
        warnings.simplefilter("ignore")
        with_retries(
            lambda: zarr.consolidate_metadata(
                zarr.storage.FsspecStore.from_url(store_url, storage_options=scratch.storage_options)
                if not scratch.local
                else zarr.storage.LocalStore(scratch.path(job, zarr_path))
            ),
            "consolidating zarr metadata",
        )
    data_objects = {e["name"]: e for r in records for e in r["files"]}
    objects: list[dict[str, Any]] = []
    for name in with_retries(lambda: scratch.list(job, zarr_path), "listing the output"):
        entry = data_objects.get(name)
        if entry is None:  # metadata and coordinates, written by the planner and just now
            entry = with_retries(lambda n=name: scratch.checksum(job, n), "checksumming metadata").to_dict()
        objects.append(entry)
    missing = set(data_objects) - {o["name"] for o in objects}
    if missing:
        raise StorageUnavailable(
            f"{len(missing)} committed shards are missing from the scratch store, e.g. {sorted(missing)[0]}"
        )
    files: list[dict[str, Any]] = []
    formats = spec["formats"]
    if "zarr" in formats:
        files.append(tree_entry(zarr_path, objects) | {"format": "zarr"})
    for fmt in formats:
        if fmt != "zarr":  # the working group itself; the other formats are written from it
            from labservice.jobs.outputs import assemble

            for entry in with_retries(
                lambda f=fmt: assemble(scratch, job, zarr_path, f, spec), f"writing {fmt}"
            ):
                files.append(entry.to_dict() | {"format": fmt})
    if "zarr" not in formats:
        with_retries(lambda: scratch.delete(job, zarr_path), "removing the working zarr")
    return parts.write_manifest(scratch, job, files, objects=objects if "zarr" in formats else [])


def tree_entry(name: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry for a folder of objects: total size and a sha256 over the sorted (name, size, sha256)."""
    import hashlib

    h = hashlib.sha256()
    for o in sorted(objects, key=lambda o: o["name"]):
        h.update(f"{o['name'][len(name) + 1 :]}\t{o['size']}\t{o['sha256']}\n".encode())
    return {
        "name": name,
        "size": sum(o["size"] for o in objects),
        "sha256": h.hexdigest(),
        "objects": len(objects),
    }


class Cutout(JobKind):
    name = "cutout"
    request = CutoutJobRequest

    def check(self, ctx: JobContext, req: CutoutJobRequest, points: np.ndarray | None) -> int:
        from labservice.cutout.region import plan_cutout

        _, _, meta = ctx.dataset(req.dataset)
        nt = len(time_indices(req, meta))
        one = sum(plan_cutout(meta, v, req.x, req.y, req.z).nbytes for v in req.variables)
        return one * nt * len(set(req.formats or ()) | {"zarr"})

    def plan(self, ctx: JobContext, job_id: str, req: CutoutJobRequest) -> Plan:
        """One part per Morton run of output shards; creates the output skeleton once."""
        from labservice.cutout.layout import layout_for
        from labservice.cutout.region import plan_cutout
        from labservice.jobs.outputs import create_cutout_zarr

        url, options, meta = ctx.dataset(req.dataset)
        base = ctx.base_spec(job_id) | {"dataset_url": url, "dataset_options": options}
        formats = list(dict.fromkeys(req.formats or ()))
        t_in = time_indices(req, meta)
        plans = {v: plan_cutout(meta, v, req.x, req.y, req.z) for v in req.variables}
        first = plans[req.variables[0]]
        counts = first.shape[:3]
        shard = [min(ctx.shard_edge, n) for n in counts]
        chunk = [s if s <= ctx.chunk_edge or s % ctx.chunk_edge else ctx.chunk_edge for s in shard]
        zarr_path = "cutout.zarr" if "zarr" in formats else f"{WORK}/cutout.zarr"
        ranges = {a: first.axis_range(a) for a in ("x", "y", "z")}
        blocks = []
        for var in req.variables:
            for t_out, t in enumerate(t_in):
                for iz, iy, ix in shard_blocks(counts, tuple(shard)):
                    sub = {}
                    for a, i, s, n in (
                        ("z", iz, shard[0], counts[0]),
                        ("y", iy, shard[1], counts[1]),
                        ("x", ix, shard[2], counts[2]),
                    ):
                        r = ranges[a]
                        lo, hi = i * s, min((i + 1) * s, n)
                        sub[a] = [r.start + lo * r.step, r.start + (hi - 1) * r.step + 1, r.step]
                    blocks.append({"variable": var, "t_in": t, "t_out": t_out, "shard": [iz, iy, ix], **sub})
        ncomp = max(len(p.components) for p in plans.values())
        groups = parts.group_by_bytes(blocks, 4 * int(np.prod(shard)) * ncomp, ctx.task_bytes)
        geometry = {"shape": list(counts), "shard_shape": shard, "chunk_shape": chunk}
        specs = [
            base | geometry | {"part": i, "zarr_path": zarr_path, "blocks": g} for i, g in enumerate(groups)
        ]
        if not ctx.scratch.exists(job_id, f"{WORK}/skeleton.json"):
            # A fresh start (or a crash before the skeleton was complete): no part may survive it.
            ctx.scratch.delete(job_id, PARTS)
            layout = layout_for(meta, list(plans.values()), t_in, keep_time_axis=True)
            create_cutout_zarr(ctx.scratch, job_id, zarr_path, layout, shard, chunk)
            ctx.scratch.put_bytes(job_id, f"{WORK}/skeleton.json", json.dumps(layout.attrs()).encode())
        final = base | {"zarr_path": zarr_path, "formats": formats, "variables": req.variables}
        return Plan(specs, final)

    # Module functions, so that Dask ships them by reference.
    run_part = staticmethod(run_part)
    finalize = staticmethod(finalize)


KIND = Cutout()
