"""The functions batch jobs run on Dask workers, and the plans that split a job into them.

Every task is idempotent. It first looks for its own part record (``.parts/<n>.json`` under the job's
prefix); when the record exists the part was committed by an earlier attempt and the task returns it
unchanged. Otherwise it computes its output, writes each object atomically (see :mod:`labservice.scratch`)
and commits by writing the part record last. A task killed half way leaves no record, so its retry
rewrites the same objects with the same bytes; duplicated attempts write identical bytes too, so no
interleaving can produce a torn result.

Cutout output is one zarr v3 group (``cutout.zarr``): one array per variable, indexed
``[time, z, y, x, component]``, sharded so that one shard is one task region and the inner chunks of a
shard are in Morton order (zarr's sharding codec). A task encodes its shards in memory with the array's
own metadata and uploads each shard as one object, so tasks never share an object. Task specs and part
records are plain dicts of JSON types.
"""

from __future__ import annotations

import errno
import io
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from labservice.errors import LabError, StorageUnavailable
from labservice.scratch import FileEntry, Scratch

PARTS = ".parts"
WORK = ".work"
MANIFEST = "manifest.json"
READ_CACHE_BYTES = 64 << 20  # per worker: cutouts read each chunk once, so a big cache only costs RSS
# Disk full, quota exceeded, read-only: waiting does not help, so the task fails at once with the reason.
_LASTING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
RETRY_SECONDS = 90.0  # a task rides out a scratch or data store outage this long before failing

T = TypeVar("T")


# -- worker-side state -----------------------------------------------------------------------------

_open_lock = threading.Lock()
_readers: OrderedDict[str, Any] = OrderedDict()
_datasets: OrderedDict[str, Any] = OrderedDict()


def _key(url: str, options: dict[str, Any] | None) -> str:
    return json.dumps([url, options or {}], sort_keys=True, default=str)


def _cached(table: OrderedDict[str, Any], key: str, make: Callable[[], Any], keep: int = 4) -> Any:
    with _open_lock:
        if key in table:
            table.move_to_end(key)
            return table[key]
    value = make()
    with _open_lock:
        table[key] = value
        while len(table) > keep:
            table.popitem(last=False)
    return value


def source_reader(url: str, options: dict[str, Any] | None = None) -> Any:
    """A ChunkReader for a dataset, opened once per worker process with a small private cache."""
    from labservice.storage import open_store
    from labservice.storage.reader import ChunkCache, ChunkReader

    def make() -> Any:
        return ChunkReader(open_store(url, storage_options=options), cache=ChunkCache(READ_CACHE_BYTES))

    return _cached(_readers, _key(url, options), make)


def source_dataset(url: str, options: dict[str, Any] | None = None) -> Any:
    """An in-process :class:`labservice.dataset.Dataset`, opened once per worker process."""
    import labservice

    return _cached(
        _datasets, _key(url, options), lambda: labservice.open_dataset(url, storage_options=options)
    )


def _lasting(exc: BaseException | None) -> bool:
    """Whether an error, or one it wraps, is a full, over-quota or read-only disk."""
    while exc is not None:
        if getattr(exc, "errno", None) in _LASTING_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def with_retries(fn: Callable[[], T], what: str, deadline: float = RETRY_SECONDS) -> T:
    """Call ``fn`` again after transient storage errors, with backoff, until ``deadline`` seconds pass."""
    start = time.monotonic()
    delay = 0.5
    while True:
        try:
            return fn()
        except (StorageUnavailable, OSError, ConnectionError, TimeoutError) as exc:
            if _lasting(exc):  # a full or read-only disk stays so: fail now, with the reason
                raise StorageUnavailable(f"{what} failed: {exc}") from exc
            if isinstance(exc, FileNotFoundError) or time.monotonic() - start + delay > deadline:
                raise StorageUnavailable(
                    f"{what} failed after retrying for {time.monotonic() - start:.0f} s: {exc}"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def _scratch(spec: dict[str, Any]) -> Scratch:
    url, options = spec["scratch"]
    return Scratch(url, options)


def _part_name(part: int, suffix: str = "json") -> str:
    return f"{PARTS}/{part:06d}.{suffix}"


class JobCancelled(Exception):
    """Raised by a straggling task of a cancelled job instead of writing into its deleted prefix."""


def _check_live(scratch: Scratch, job: str) -> None:
    if with_retries(lambda: scratch.cancelled(job), "checking for cancellation"):
        raise JobCancelled(f"job {job} was cancelled")


def _committed(scratch: Scratch, job: str, part: int) -> dict[str, Any] | None:
    if not with_retries(lambda: scratch.exists(job, _part_name(part)), "checking a part record"):
        return None
    return json.loads(
        with_retries(lambda: scratch.read_bytes(job, _part_name(part)), "reading a part record")
    )


def _commit(scratch: Scratch, job: str, part: int, record: dict[str, Any]) -> dict[str, Any]:
    _check_live(scratch, job)
    data = json.dumps(record, sort_keys=True).encode()
    with_retries(lambda: scratch.put_bytes(job, _part_name(part), data), "committing a part record")
    return record


# -- cutout ----------------------------------------------------------------------------------------


def shard_blocks(counts: tuple[int, int, int], shard: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Output shard indices (iz, iy, ix) of a (nz, ny, nx) output, in Morton order of the shard index."""
    from labservice.storage.morton import morton_argsort

    nb = [-(-n // s) for n, s in zip(counts, shard, strict=True)]
    iz, iy, ix = (a.ravel() for a in np.meshgrid(*(np.arange(n) for n in nb), indexing="ij"))
    order = morton_argsort(ix, iy, iz)
    return [(int(iz[i]), int(iy[i]), int(ix[i])) for i in order]


def group_by_bytes(items: list[Any], item_bytes: int, task_bytes: int) -> list[list[Any]]:
    """Cut an ordered list into contiguous runs of about ``task_bytes`` each (at least one item per run)."""
    per = max(1, task_bytes // max(item_bytes, 1))
    return [items[i : i + per] for i in range(0, len(items), per)]


def run_cutout_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Read the source region of each output shard in ``spec["blocks"]`` and store it as one shard object.

    Each block is ``{"variable", "t_in", "t_out", "shard": [iz, iy, ix], "x": [start, stop, step], "y",
    "z"}`` with source index ranges already cut to the shard's output extent. ``spec`` also carries the
    output array's spatial ``shape``, ``shard_shape`` and ``chunk_shape`` (z, y, x).
    """
    from labservice.cutout.region import read_cutout
    from labservice.job_outputs import encode_shard

    scratch, job, part = _scratch(spec), spec["job"], spec["part"]
    done = _committed(scratch, job, part)
    if done is not None:
        return done
    reader = with_retries(
        lambda: source_reader(spec["dataset_url"], spec.get("dataset_options")), "opening the dataset"
    )
    shape, shard, chunk = (tuple(spec[k]) for k in ("shape", "shard_shape", "chunk_shape"))
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
        data = encode_shard(source, corner, shape, shard, chunk)
        del source
        name = f"{spec['zarr_path']}/{block['variable']}/c/{block['t_out']}/{iz}/{iy}/{ix}/0"
        _check_live(scratch, job)
        entry = with_retries(lambda n=name, d=data: scratch.put_parts(job, n, d), "writing an output shard")
        entries.append(entry.to_dict())
    return _commit(scratch, job, part, {"part": part, "files": entries})


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


def finalize_cutout(spec: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consolidate the zarr metadata, build HDF5+XDMF or NetCDF if asked, write the manifest.

    Returns the file entries of the job (top-level results first); the manifest lists every object.
    """
    import warnings

    import zarr

    scratch, job = _scratch(spec), spec["job"]
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
        if fmt in ("hdf5", "netcdf"):
            from labservice.job_outputs import assemble

            for entry in with_retries(
                lambda f=fmt: assemble(scratch, job, zarr_path, f, spec), f"writing {fmt}"
            ):
                files.append(entry.to_dict() | {"format": fmt})
    manifest = {"job": job, "files": files, "objects": objects if "zarr" in formats else []}
    if "zarr" not in formats:
        with_retries(lambda: scratch.delete(job, zarr_path), "removing the working zarr")
    m = with_retries(
        lambda: scratch.put_bytes(job, MANIFEST, json.dumps(manifest, indent=1).encode()),
        "writing the manifest",
    )
    return [*files, m.to_dict() | {"format": "json"}]


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


# -- points and particles --------------------------------------------------------------------------


def morton_order(meta: Any, points: np.ndarray, cell: int = 1) -> np.ndarray:
    """Permutation sorting points by the Morton key of the grid cell (of ``cell`` nodes) they fall in."""
    from labservice.storage.morton import MAX_INDEX, morton_argsort

    idx = []
    for k, name in enumerate(("x", "y", "z")):
        axis = meta.grid.axis(name)
        c = axis.coords()
        p = points[:, k]
        if axis.periodic:
            p = c[0] + np.mod(p - c[0], axis.period)
        i = np.clip(np.searchsorted(c, p, side="right") - 1, 0, axis.size - 1) // cell
        idx.append(np.clip(i, 0, MAX_INDEX))
    return morton_argsort(*idx)


def _read_points(scratch: Scratch, job: str, start: int, stop: int) -> np.ndarray:
    raw = with_retries(
        lambda: scratch.read_bytes(job, f"{WORK}/points.f64", start * 24, stop * 24),
        "reading the job's points",
    )
    return np.frombuffer(raw, dtype=np.float64).reshape(-1, 3).copy()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def run_points_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``Dataset.points`` (kind points) or ``Dataset.track`` (kind particles) on one batch."""
    scratch, job, part = _scratch(spec), spec["job"], spec["part"]
    done = _committed(scratch, job, part)
    if done is not None:
        return done
    pts = _read_points(scratch, job, spec["start"], spec["stop"])
    ds = with_retries(
        lambda: source_dataset(spec["dataset_url"], spec.get("dataset_options")), "opening the dataset"
    )
    call = dict(spec["call"])
    if spec["kind"] == "points":
        values = with_retries(lambda: ds.points(call.pop("variable"), pts, **call), "evaluating points")
    else:
        track = with_retries(lambda: ds.track(pts, **call), "tracking particles")
        values = track.trajectory if call.get("every") else track.positions
    values = np.asarray(values)
    _check_live(scratch, job)
    entry = with_retries(
        lambda: scratch.put_bytes(job, _part_name(part, "npy"), _npy_bytes(values)), "writing a part"
    )
    return _commit(
        scratch,
        job,
        part,
        {
            "part": part,
            "start": spec["start"],
            "stop": spec["stop"],
            "shape": list(values.shape),
            "dtype": str(values.dtype),
            "files": [entry.to_dict()],
        },
    )


def finalize_points(spec: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put every batch back in the caller's point order and write ``<kind>.npy`` plus the manifest.

    The point axis of a batch result is axis ``spec["point_axis"]`` (1 for time series, else 0).
    """
    import os
    import tempfile

    scratch, job = _scratch(spec), spec["job"]
    order = np.frombuffer(
        with_retries(lambda: scratch.read_bytes(job, f"{WORK}/order.i64"), "reading the order"), np.int64
    )
    records = sorted(records, key=lambda r: r["part"])
    first = records[0]
    axis = spec["point_axis"]
    shape = list(first["shape"])
    shape[axis] = len(order)
    fd, tmp = tempfile.mkstemp(suffix=".npy")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(first["dtype"]), shape=tuple(shape))
        for r in records:
            raw = with_retries(
                lambda r=r: scratch.read_bytes(job, _part_name(r["part"], "npy")), "reading a part"
            )
            values = np.load(io.BytesIO(raw), allow_pickle=False)
            where = [slice(None)] * len(shape)
            where[axis] = order[r["start"] : r["stop"]]
            out[tuple(where)] = values
        out.flush()
        del out
        name = f"{spec['kind']}.npy"
        entry = with_retries(lambda: scratch.put_file(job, name, tmp), f"writing {name}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    files = [entry.to_dict() | {"format": "npy"}]
    m = scratch.put_bytes(job, MANIFEST, json.dumps({"job": job, "files": files}, indent=1).encode())
    return [*files, m.to_dict() | {"format": "json"}]


def executing_keys(dask_worker: Any) -> list[str]:
    """Keys of the tasks a worker runs or is about to run (``client.run`` this to see a job drain).

    Cancelled tasks still running their Python call are in state ``cancelled`` until the call returns.
    """
    busy = ("executing", "long-running", "cancelled", "resumed", "ready", "constrained", "waiting")
    return [str(ts.key) for ts in list(dask_worker.state.tasks.values()) if ts.state in busy]


def describe(exc: BaseException) -> str:
    """The error text a failed job shows: the LabError message, or the exception type and text."""
    if isinstance(exc, LabError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


__all__ = [
    "FileEntry",
    "describe",
    "executing_keys",
    "finalize_cutout",
    "finalize_points",
    "group_by_bytes",
    "morton_order",
    "run_cutout_part",
    "run_points_part",
    "shard_blocks",
    "tree_entry",
    "with_retries",
]
