"""Batch jobs on Dask: the engine, the job registry, the scratch store, the job kinds.

- :mod:`~labservice.jobs.engine`: :class:`JobEngine` (run as one Dask graph, resume, cancel, sweep); it
  knows no kind by name. :mod:`~labservice.jobs.front`: :class:`JobFront`, the API side (submit, read,
  cancel, files) without Dask. :mod:`~labservice.jobs.lease`: job leases and heartbeats.
  :mod:`~labservice.jobs.service`: `labservice engine`. :mod:`~labservice.jobs.wiring`: built from settings.
- :mod:`~labservice.jobs.kinds`: one module per kind (request model, check, plan, part runner, finalizer)
  and the registry of kinds.
- :mod:`~labservice.jobs.parts`: what the parts share on the workers (commit, retries, cancellation).
- :mod:`~labservice.jobs.registry` (job states in the platform database), :mod:`~labservice.jobs.scratch` (result store),
  :mod:`~labservice.jobs.outputs` (cutout output files).
"""

from labservice.jobs.engine import JobEngine
from labservice.jobs.front import JobFront, JobLimits
from labservice.jobs.kinds import KINDS, JobKind, parse_request, request_schema
from labservice.jobs.registry import ACTIVE, FINAL, JobRecord, JobRegistry
from labservice.jobs.scratch import FileEntry, Scratch
from labservice.jobs.wiring import engine_from_settings, front_from_settings, start_jobs, stop_jobs

__all__ = [
    "ACTIVE",
    "FINAL",
    "KINDS",
    "FileEntry",
    "JobEngine",
    "JobFront",
    "JobKind",
    "JobLimits",
    "JobRecord",
    "JobRegistry",
    "Scratch",
    "engine_from_settings",
    "front_from_settings",
    "parse_request",
    "request_schema",
    "start_jobs",
    "stop_jobs",
]
