"""What every job part shares on the workers: idempotent commits, retries, cancellation, the manifest.

Every part is idempotent. It first looks for its own part record (``.parts/<n>.json`` under the job's
prefix); when the record exists the part was committed by an earlier attempt and the task returns it
unchanged. Otherwise it computes its output, writes each object atomically (see :mod:`labservice.jobs.scratch`)
and commits by writing the part record last. A task killed half way leaves no record, so its retry
rewrites the same objects with the same bytes; duplicated attempts write identical bytes too, so no
interleaving can produce a torn result. Task specs and part records are plain dicts of JSON types.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from labservice.errors import LabError, StorageUnavailable
from labservice.jobs.scratch import FileEntry, Scratch

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


def cached(table: OrderedDict[str, Any], key: str, make: Callable[[], Any], keep: int = 4) -> Any:
    """``table[key]``, made once per worker process (the ``keep`` most recent stay open)."""
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

    return cached(_readers, _key(url, options), make)


def source_dataset(url: str, options: dict[str, Any] | None = None) -> Any:
    """An in-process :class:`labservice.facade.Dataset`, opened once per worker process."""
    import labservice

    return cached(
        _datasets, _key(url, options), lambda: labservice.open_dataset(url, storage_options=options)
    )


# -- retries ---------------------------------------------------------------------------------------


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


# -- part records ----------------------------------------------------------------------------------


def scratch_of(spec: dict[str, Any]) -> Scratch:
    """The job's scratch store, rebuilt on the worker from the spec's ``(url, options)``."""
    url, options = spec["scratch"]
    return Scratch(url, options)


def part_name(part: int, suffix: str = "json") -> str:
    return f"{PARTS}/{part:06d}.{suffix}"


class JobCancelled(Exception):
    """Raised by a straggling task of a cancelled job instead of writing into its deleted prefix."""


def check_live(scratch: Scratch, job: str) -> None:
    if with_retries(lambda: scratch.cancelled(job), "checking for cancellation"):
        raise JobCancelled(f"job {job} was cancelled")


def committed(scratch: Scratch, job: str, part: int) -> dict[str, Any] | None:
    """The part's record when an earlier attempt committed it, else None."""
    if not with_retries(lambda: scratch.exists(job, part_name(part)), "checking a part record"):
        return None
    return json.loads(with_retries(lambda: scratch.read_bytes(job, part_name(part)), "reading a part record"))


def commit(scratch: Scratch, job: str, part: int, record: dict[str, Any]) -> dict[str, Any]:
    """Write the part record last: from now on the part counts as done."""
    check_live(scratch, job)
    data = json.dumps(record, sort_keys=True).encode()
    with_retries(lambda: scratch.put_bytes(job, part_name(part), data), "committing a part record")
    return record


def put_object(scratch: Scratch, job: str, name: str, data: bytes, what: str) -> dict[str, Any]:
    """Write one object of a live job (with retries); returns its file entry as a dict."""
    check_live(scratch, job)
    return with_retries(lambda: scratch.put_bytes(job, name, data), what).to_dict()


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def load_npy(raw: bytes) -> np.ndarray:
    return np.load(io.BytesIO(raw), allow_pickle=False)


def group_by_bytes(items: list[Any], item_bytes: int, task_bytes: int) -> list[list[Any]]:
    """Cut an ordered list into contiguous runs of about ``task_bytes`` each (at least one item per run)."""
    per = max(1, task_bytes // max(item_bytes, 1))
    return [items[i : i + per] for i in range(0, len(items), per)]


# -- results ---------------------------------------------------------------------------------------


def put_result(scratch: Scratch, job: str, name: str, write: Callable[[str], None]) -> FileEntry:
    """Have ``write(path)`` make a result file in a local temporary file, then store it as ``name``."""
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(name)[1])
    os.close(fd)
    try:
        write(tmp)
        return with_retries(lambda: scratch.put_file(job, name, tmp), f"writing {name}")
    finally:
        if os.path.exists(tmp):  # put_file may have moved it into a local scratch
            os.unlink(tmp)


def write_manifest(
    scratch: Scratch, job: str, files: list[dict[str, Any]], **extra: Any
) -> list[dict[str, Any]]:
    """Write ``manifest.json`` (the finalizer's last write) and return the job's file entries with it."""
    body = json.dumps({"job": job, "files": files, **extra}, indent=1).encode()
    m = with_retries(lambda: scratch.put_bytes(job, MANIFEST, body), "writing the manifest")
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
