"""The ingest loop: write a described dataset shard by shard, in Morton order, resumably.

Ingest reads only the slab of the source files that one shard needs, writes it, then marks the shard done,
so memory stays bounded by one shard and a re-run skips the shards already finished.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from labservice.datasets.ingest.descriptor import Descriptor, build_meta, load_descriptor
from labservice.datasets.ingest.sources import VariableSource, resolve
from labservice.errors import InvalidInput, NotFound
from labservice.storage import create_store, open_store
from labservice.storage.base import FieldStore
from labservice.storage.metadata import DatasetMeta
from labservice.storage.morton import morton_argsort


# -- the ingest loop -------------------------------------------------------------------------------------
@dataclass
class IngestStats:
    """What one ingest run did."""

    url: str
    shards_written: int = 0
    shards_skipped: int = 0
    bytes_written: int = 0
    seconds: float = 0.0


def shard_order(meta: DatasetMeta, variable: str) -> list[tuple[int, int, int]]:
    """Shard indices (sz, sy, sx) in Morton order, so neighbouring shards are written together."""
    shards = meta.array_shards(variable)[1:4]
    counts = [-(-n // s) for n, s in zip(meta.grid.array_shape, shards, strict=True)]
    sz, sy, sx = np.meshgrid(*(np.arange(c) for c in counts), indexing="ij")
    sz, sy, sx = sz.ravel(), sy.ravel(), sx.ravel()
    order = morton_argsort(sx, sy, sz)
    return [(int(sz[i]), int(sy[i]), int(sx[i])) for i in order]


def _same_layout(a: DatasetMeta, b: DatasetMeta) -> str | None:
    """The first structural difference between two metadata, or None."""
    for field in ("grid", "times", "variables", "chunks", "shards"):
        if getattr(a, field) != getattr(b, field):
            return field
    return None


def _open_existing(desc: Descriptor, meta: DatasetMeta, url: str) -> FieldStore | None:
    """The target store opened for resuming, or None when there is none yet."""
    try:
        store = open_store(url, storage_options=desc.storage_options, mode="r+")
    except NotFound:
        return None
    diff = _same_layout(store.meta, meta)
    if diff is not None:
        store.close()
        raise InvalidInput(
            f"the store at {url} already holds a dataset with a different {diff}; "
            "pass overwrite=True (labservice ingest --overwrite) to replace it"
        )
    return store


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def ingest(
    desc: Descriptor,
    base: str | os.PathLike[str],
    overwrite: bool = False,
    progress: bool = True,
    descriptor: str | os.PathLike[str] = "",
) -> IngestStats:
    """Ingest a validated descriptor; see :func:`ingest_descriptor`.

    Returns
    -------
    IngestStats
        The store URL and how many shards were written and skipped.
    """
    import time as _time

    started = _time.perf_counter()
    base = Path(base)
    meta = build_meta(desc, base, descriptor)
    url = resolve(base, desc.store)
    if desc.backend == "hdf5" and not url.lower().endswith((".h5", ".hdf5")):
        raise InvalidInput(
            f"descriptor {descriptor}: store: with backend hdf5 the store URL must end in .h5; got {url}"
        )
    sources = {n: VariableSource(n, v, meta, base, Path(descriptor)) for n, v in desc.variables.items()}
    meta.provenance["ingest"] = {
        "descriptor": str(descriptor),
        "started": _now(),
        "complete": False,
        "sources": {n: v.source.model_dump() for n, v in desc.variables.items()},
    }
    store = None if overwrite else _open_existing(desc, meta, url)
    if store is None:
        # Check the first time step's sources before creating anything: most mistakes show up there.
        for src in sources.values():
            src.open(0).file.close()
        store = create_store(
            url, meta, backend=desc.backend, storage_options=desc.storage_options, overwrite=overwrite
        )
    stats = IngestStats(url=url)
    try:
        if store.meta.provenance.get("ingest", {}).get("complete") is not True:
            store.update_meta(meta)
        total = sum(len(shard_order(meta, n)) for n in sources) * len(meta.times)
        with tqdm(total=total, desc=f"ingest {meta.id}", unit="shard", disable=not progress) as bar:
            for t in range(len(meta.times)):
                for name, src in sources.items():
                    _ingest_step(store, src, name, t, stats, bar)
        meta.provenance["ingest"].update(complete=True, finished=_now())
        store.update_meta(meta)
    finally:
        store.close()
    stats.seconds = _time.perf_counter() - started
    return stats


def _ingest_step(
    store: FieldStore, src: VariableSource, name: str, t: int, stats: IngestStats, bar: tqdm
) -> None:
    """Write every unfinished shard of one variable at one time step."""
    meta = store.meta
    shards = shard_order(meta, name)
    todo = [s for s in shards if not store.shard_done(name, t, s)]
    stats.shards_skipped += len(shards) - len(todo)
    bar.update(len(shards) - len(todo))
    if not todo:
        return  # never open the source files of finished time steps: they may be gone
    size = meta.array_shards(name)[1:4]
    grid = meta.grid.array_shape
    handle = src.open(t)
    try:
        for shard in todo:
            lo = tuple(i * s for i, s in zip(shard, size, strict=True))
            hi = tuple(min(a + s, n) for a, s, n in zip(lo, size, grid, strict=True))
            data = src.read(handle, t, lo, hi)  # type: ignore[arg-type]
            store.write_box(name, t, *lo, data)
            store.mark_shard_done(name, t, shard)
            stats.shards_written += 1
            stats.bytes_written += data.nbytes
            bar.update(1)
    finally:
        handle.file.close()


def ingest_descriptor(path: str | os.PathLike[str], overwrite: bool = False, progress: bool = True) -> str:
    """Ingest the dataset a YAML descriptor describes and return the store URL.

    Streams shard by shard: only the slab of the source files one shard needs is in memory at a time. The
    run is resumable: shards already marked done in the store are skipped, so after a crash or a missing
    file, run it again. Bad descriptors, missing files or datasets and shape mismatches raise
    :class:`~labservice.errors.LabError` subclasses naming the file and the field.

    Parameters
    ----------
    path : path-like
        The descriptor (YAML).
    overwrite : bool
        Replace an existing store instead of resuming into it.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    str
        The store URL (relative local paths resolved against the descriptor's folder).
    """
    path = Path(path).resolve()
    desc = load_descriptor(path)
    return ingest(desc, path.parent, overwrite=overwrite, progress=progress, descriptor=path).url
