"""Ingest: turn simulation output into labservice datasets.

Field datasets come from HDF5 files through a YAML descriptor (:mod:`.descriptor` the schema and its error
explainer, :mod:`.sources` the file reading, :mod:`.loop` the resumable shard loop); N-body simulations
come from Gadget/SWIFT snapshots (:mod:`.gadget`, halos by :mod:`.fof`, merger trees by :mod:`.trees`,
assembled by :mod:`.cosmology`). The cosmology modules are imported from their own paths: they pull in
numba and scipy, which a field ingest does not need.
"""

from labservice.datasets.ingest.descriptor import (
    AxisSpec,
    Descriptor,
    GridSpec,
    SourceSpec,
    TimeRange,
    VariableSpec,
    build_meta,
    load_descriptor,
)
from labservice.datasets.ingest.loop import IngestStats, ingest, ingest_descriptor, shard_order
from labservice.datasets.ingest.sources import OpenSource, VariableSource

__all__ = [
    "AxisSpec",
    "Descriptor",
    "GridSpec",
    "IngestStats",
    "OpenSource",
    "SourceSpec",
    "TimeRange",
    "VariableSource",
    "VariableSpec",
    "build_meta",
    "ingest",
    "ingest_descriptor",
    "load_descriptor",
    "shard_order",
]
