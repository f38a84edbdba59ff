"""The ingest loop: write a described dataset shard by shard, in Morton order, resumably.

Every shard of every variable at every time step is one task (:class:`ShardTask`): read the box of the
sources it needs (memory-mapped where the HDF5 layout allows), write the whole shard
(:mod:`~labservice.storage.shard_writer`), then mark it done. Tasks run on a few threads in this process
(:func:`run_in_threads`) or on a Dask cluster (:mod:`.distributed`). Memory stays bounded by one shard per
thread (a 4 MB batch of it for local targets and memory-mapped sources), and a re-run skips the shards
marked done.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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
from labservice.storage.shard_writer import release_buffer
from labservice.storage.zarr_ import ZarrStore


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
    threads: int | None = None,
    dask: str | None = None,
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
    if dask is not None and (desc.backend == "hdf5" or url.lower().endswith((".h5", ".hdf5"))):
        raise InvalidInput(
            f"descriptor {descriptor}: --dask writes shards from many processes, which one HDF5 file cannot "
            "take; use the zarr back end (a store URL not ending in .h5), or leave out --dask"
        )
    sources = {
        n: VariableSource(n, v, meta, base, Path(descriptor), desc.storage_options) for n, v in desc.variables.items()
    }
    meta.provenance["ingest"] = {
        "descriptor": str(descriptor),
        "started": _now(),
        "complete": False,
        "sources": {n: v.source.model_dump(exclude={"storage_options"}) for n, v in desc.variables.items()},
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
        tasks, stats.shards_skipped = pending_shards(store, meta, list(sources))
        with tqdm(total=len(tasks) + stats.shards_skipped, initial=stats.shards_skipped,
                  desc=f"ingest {meta.id}", unit="shard", disable=not progress) as bar:  # fmt: skip

            def done(task: ShardTask, nbytes: int) -> None:
                stats.shards_written += 1
                stats.bytes_written += nbytes
                bar.update(1)

            if dask is not None:
                from labservice.datasets.ingest.distributed import run_on_dask

                context = TaskContext.of(desc, meta, base, descriptor, url)
                run_on_dask(dask, context, tasks, done, workers=threads)
            else:
                run_in_threads(store, sources, tasks, done, threads=1 if store.backend != "zarr" else threads)
        meta.provenance["ingest"].update(complete=True, finished=_now())
        store.update_meta(meta)
    finally:
        store.close()
    stats.seconds = _time.perf_counter() - started
    return stats


# -- shard tasks -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardTask:
    """One shard of one variable at one time step: the unit of work, of resuming and of Dask tasks."""

    t: int
    variable: str
    shard: tuple[int, int, int]


def pending_shards(store: FieldStore, meta: DatasetMeta, variables: list[str]) -> tuple[list[ShardTask], int]:
    """The shards not yet marked done (time step, then variable, then Morton order) and how many are."""
    tasks: list[ShardTask] = []
    skipped = 0
    for t in range(len(meta.times)):
        for name in variables:
            listed = store.shards_done(name, t) if isinstance(store, ZarrStore) else None
            for shard in shard_order(meta, name):
                if shard in listed if listed is not None else store.shard_done(name, t, shard):
                    skipped += 1
                else:
                    tasks.append(ShardTask(t, name, shard))
    return tasks, skipped


def write_shard(store: FieldStore, src: VariableSource, task: ShardTask) -> int:
    """Read one shard's box from the sources, write it, mark it done; the bytes written.

    The zarr back end takes the components straight from the memory-mapped sources (no copy before its
    gather); other back ends take one interleaved box.
    """
    meta = store.meta
    size = meta.array_shards(task.variable)[1:4]
    lo = tuple(i * s for i, s in zip(task.shard, size, strict=True))
    hi = tuple(min(a + s, n) for a, s, n in zip(lo, size, meta.grid.array_shape, strict=True))
    handle = src.open(task.t)
    try:
        if isinstance(store, ZarrStore):
            components = src.components(handle, task.t, lo, hi)  # type: ignore[arg-type]
            store.write_shard(task.variable, task.t, task.shard, components)
        else:
            store.write_box(task.variable, task.t, *lo, src.read(handle, task.t, lo, hi))  # type: ignore[arg-type]
    finally:
        handle.file.close()
    store.mark_shard_done(task.variable, task.t, task.shard)
    points = int(np.prod([b - a for a, b in zip(lo, hi, strict=True)]))
    return points * len(src.spec.components) * src.dtype.itemsize


# Each thread holds a 4 MB batch of chunks, or one whole shard (200 MB at the default 256^3 x 3 float32)
# when the target is an object store or h5py must decode the sources (chunked or compressed HDF5).
MAX_DEFAULT_THREADS = 8


def default_threads() -> int:
    """One shard writer per CPU this process may use, at most 8 (the gather, the checksums and the writes
    release the GIL; past a few threads the page cache or the network is the limit, not the CPU)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, MAX_DEFAULT_THREADS)


def run_in_threads(
    store: FieldStore,
    sources: dict[str, VariableSource],
    tasks: list[ShardTask],
    done: Callable[[ShardTask, int], None],
    threads: int | None = None,
) -> None:
    """Write the shards with up to ``threads`` at a time (memory: that many shards); ``done`` is called in
    this thread. On the first failure no new shard starts, the running ones finish, and the error is raised,
    so every shard before it stays marked done for the next run."""
    threads = max(1, threads or default_threads())
    if threads == 1:
        try:
            for task in tasks:
                done(task, write_shard(store, sources[task.variable], task))
        finally:
            release_buffer()  # this thread lives on: do not keep a shard's worth of memory
        return
    todo = iter(tasks)
    error: BaseException | None = None
    with ThreadPoolExecutor(threads, thread_name_prefix="ingest") as pool:
        running: dict[Future[int], ShardTask] = {}

        def submit() -> None:
            task = next(todo, None)
            if task is not None:
                running[pool.submit(write_shard, store, sources[task.variable], task)] = task

        for _ in range(threads):
            submit()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                try:
                    nbytes = future.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after the running shards finish
                    error = error or exc
                    continue
                done(task, nbytes)
                if error is None:
                    submit()
    if error is not None:
        raise error


@dataclass(frozen=True)
class TaskContext:
    """What a Dask worker needs to write shards of one ingest, as JSON-able values (nothing pickled of the
    user's)."""

    descriptor: dict
    meta: dict
    base: str
    path: str
    url: str

    @classmethod
    def of(
        cls, desc: Descriptor, meta: DatasetMeta, base: Path, path: str | os.PathLike[str], url: str
    ) -> TaskContext:
        return cls(desc.model_dump(mode="json"), meta.model_dump(mode="json"), str(base), str(path), url)

    def open(self) -> tuple[FieldStore, dict[str, VariableSource]]:
        """The target store (read-write) and the variables' sources."""
        desc = Descriptor.model_validate(self.descriptor)
        meta = DatasetMeta.model_validate(self.meta)
        sources = {
            n: VariableSource(n, v, meta, Path(self.base), Path(self.path), desc.storage_options)
            for n, v in desc.variables.items()
        }
        return open_store(self.url, storage_options=desc.storage_options, mode="r+"), sources


def ingest_descriptor(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    progress: bool = True,
    threads: int | None = None,
    dask: str | None = None,
) -> str:
    """Ingest the dataset a YAML descriptor describes and return the store URL.

    Streams shard by shard: only the boxes of the source files the shards being written need are in memory
    (one shard per thread or Dask worker thread). The run is resumable: shards already marked done in the
    store are skipped, so after a crash, a killed worker or a missing file, run it again. Bad descriptors,
    missing files or datasets and shape mismatches raise
    :class:`~labservice.errors.LabError` subclasses naming the file and the field.

    Parameters
    ----------
    path : path-like
        The descriptor (YAML).
    overwrite : bool
        Replace an existing store instead of resuming into it.
    progress : bool
        Show a tqdm progress bar on stderr.
    threads : int, optional
        Shards written at once in this process (default: one per CPU, at most 8; each holds at most one
        shard in memory); with ``dask="local"``, the number of worker processes.
    dask : str, optional
        Write the shards as tasks on a Dask cluster: a scheduler address (``tcp://host:8786``), or
        ``"local"`` for a local cluster started for this ingest. Workers must see the source files at the
        same paths and reach the store.

    Returns
    -------
    str
        The store URL (relative local paths resolved against the descriptor's folder).
    """
    path = Path(path).resolve()
    desc = load_descriptor(path)
    return ingest(
        desc, path.parent, overwrite=overwrite, progress=progress, descriptor=path, threads=threads, dask=dask
    ).url
