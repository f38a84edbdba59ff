"""The interface every job kind implements, and what the engine lends a kind while it checks and plans.

A kind is one object (see :class:`JobKind`) with:

- ``request``: the pydantic model of its request body (a ``kind`` literal plus ``dataset``);
- ``check``: validate the request (and its points) against the data, return the output size in bytes;
- ``accept``: store inputs the parts read (the points), once the job is registered;
- ``plan``: the job's idempotent parts, as plain dict specs, and the finalizer's spec;
- ``run_part(spec)``: compute and commit one part, on a Dask worker;
- ``finalize(spec, records)``: assemble the parts into result files and write the manifest.

``run_part`` and ``finalize`` run on workers: they get only their spec (JSON types) and are module-level
functions, so Dask ships them by reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from labservice.errors import NotFound
from labservice.jobs.scratch import Scratch


@dataclass(frozen=True)
class JobContext:
    """The engine's resources and sizing a kind uses on the service side (never on workers)."""

    scratch: Scratch
    resolve_dataset: Callable[[str], tuple[str, dict[str, Any] | None]]
    resolve_simulation: Callable[[str], str | Path] | None = None
    shard_edge: int = 128
    chunk_edge: int = 64
    task_bytes: int = 32 << 20
    points_per_task: int = 65536
    track_segment_steps: int | None = None  # None: the tracking library's own limit
    owner: str | None = None  # the submitting token, while a job is checked, accepted and planned
    mydb: Any = None  # labservice.datasets.mydb.MyDB of the server (points_table, the sql kind), or None

    def dataset(self, dataset_id: str) -> tuple[str, dict[str, Any] | None, Any]:
        """``(url, storage_options, meta)`` of a field dataset."""
        from labservice.storage import open_store

        url, options = self.resolve_dataset(dataset_id)
        store = open_store(url, storage_options=options)
        try:
            return url, options, store.meta
        finally:
            store.close()

    def simulation_path(self, sim_id: str) -> str | Path:
        """The folder of a cosmology simulation."""
        if self.resolve_simulation is None:
            raise NotFound(f"this server runs no cosmology jobs, so {sim_id!r} cannot be used in a job")
        return self.resolve_simulation(sim_id)

    def base_spec(self, job_id: str) -> dict[str, Any]:
        """What every part spec carries: the job id and the scratch store."""
        return {"job": job_id, "scratch": list(self.scratch.spec())}


@dataclass
class Plan:
    """A planned job: one spec per idempotent part (run in list order) and the finalizer's spec."""

    parts: list[dict[str, Any]]
    final: dict[str, Any] = field(default_factory=dict)


class JobKind:
    """Base of the job kinds. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    request: ClassVar[type[BaseModel]]
    takes_points: ClassVar[bool] = False  # whether the job comes with an (N, 3) array of points

    def check(self, ctx: JobContext, req: Any, points: np.ndarray | None) -> int:
        """Refuse a bad request before anything runs; returns the job's output size in bytes."""
        raise NotImplementedError

    def inputs(self, ctx: JobContext, req: Any, points: np.ndarray | None) -> np.ndarray | None:
        """The job's points: those sent with it, or (a kind may override this) read from elsewhere."""
        return points

    def accept(self, ctx: JobContext, job_id: str, req: Any, points: np.ndarray | None) -> None:
        """Store what the parts read besides the request (called once, after registration)."""

    def plan(self, ctx: JobContext, job_id: str, req: Any) -> Plan:
        """The job's parts. Called at every (re)start, so it must give the same parts each time."""
        raise NotImplementedError

    @staticmethod
    def run_part(spec: dict[str, Any]) -> dict[str, Any]:
        """Compute and commit one part (on a worker); returns its record."""
        raise NotImplementedError

    @staticmethod
    def finalize(spec: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Assemble the committed parts into result files, write the manifest; returns the file entries."""
        raise NotImplementedError
