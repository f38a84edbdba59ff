"""Helpers shared by the back ends: URL handling, error translation, box checks, shard marks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from labservice.errors import CorruptData, InvalidInput, LabError, NotFound, StorageUnavailable, unknown
from labservice.storage.metadata import DatasetMeta

# A shard index entry (offset, nbytes) of an inner chunk never written (zarr's sharding codec).
EMPTY_CHUNK = np.uint64(2**64 - 1)


def crc_ok(data: bytes | memoryview) -> bool:
    """Whether ``data`` ends in the crc32c of the rest (a shard index or an inner chunk, as zarr writes them)."""
    import crc32c

    return len(data) >= 4 and crc32c.crc32c(data[:-4]) == int.from_bytes(data[-4:], "little")

META_KEY = "labservice"


def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return os.path.abspath(url.removeprefix("file://"))


def _is_connection_error(exc: BaseException) -> bool:
    # Remote failures arrive as many types (aiohttp, botocore, OSError); match them by class name too so
    # we need not import every client library.
    names = {c.__name__ for c in type(exc).__mro__}
    markers = {"ConnectionError", "ClientConnectorError", "EndpointConnectionError", "ConnectTimeoutError",
               "ServerDisconnectedError", "ClientOSError", "ReadTimeoutError", "TimeoutError"}
    return bool(names & markers) or isinstance(exc, ConnectionError)


@contextmanager
def remote_errors(url: str, what: str) -> Iterator[None]:
    """Translate failures to reach a store into :class:`StorageUnavailable`; let LabErrors through."""
    try:
        yield
    except LabError:
        raise
    except Exception as exc:
        seen: BaseException | None = exc
        while seen is not None:  # connection errors are often wrapped (OSError from aiohttp, etc.)
            if _is_connection_error(seen):
                raise StorageUnavailable(f"cannot reach the store at {url} while {what}: {exc}") from exc
            seen = seen.__cause__ or seen.__context__
        raise


def write_atomic(fs: Any, local: bool, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part (locally a
    temporary file and a rename, no fsync: not power-loss durable; object stores put whole objects)."""
    if local:
        import uuid

        fs.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


class store_errors:
    """Connection failures of an fsspec store (scratch, user store) become StorageUnavailable (503), saying
    ``"{unavailable} at {path}: {error}"``; a missing file and our own errors pass through."""

    def __init__(self, path: str, unavailable: str) -> None:
        self.path, self.unavailable = path, unavailable

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, (FileNotFoundError, InvalidInput, NotFound)):
            return False
        if isinstance(exc, (OSError, ConnectionError, TimeoutError)) or "Connect" in type(exc).__name__:
            raise StorageUnavailable(f"{self.unavailable} at {self.path}: {exc}") from exc
        return False


def check_variable(meta: DatasetMeta, variable: str) -> None:
    if variable not in meta.variables:
        raise unknown("variable", variable, meta.variables)


def check_time(meta: DatasetMeta, t: int) -> None:
    n = len(meta.times)
    if not 0 <= t < n:
        raise InvalidInput(f"time index must be in [0, {n - 1}]; got {t}")


def check_box(meta: DatasetMeta, z: slice, y: slice, x: slice) -> tuple[slice, slice, slice]:
    """Normalise three step-1 slices and make sure they lie inside the grid."""
    out = []
    for s, n, name in zip((z, y, x), meta.grid.array_shape, "zyx", strict=False):
        start = 0 if s.start is None else int(s.start)
        stop = n if s.stop is None else int(s.stop)
        if s.step not in (None, 1):
            raise InvalidInput(f"{name} slice must have step 1; got {s.step}")
        if not 0 <= start <= stop <= n:
            raise InvalidInput(f"{name} range must lie in [0, {n}]; got [{start}, {stop})")
        out.append(slice(start, stop))
    return out[0], out[1], out[2]


def check_read(meta: DatasetMeta, variable: str, t: int, z: slice, y: slice, x: slice) -> tuple[slice, slice, slice]:
    """Check a ``read_box`` request (variable, time index, box) and return the normalised box."""
    check_variable(meta, variable)
    check_time(meta, t)
    return check_box(meta, z, y, x)


def check_write(meta: DatasetMeta, variable: str, t: int, corner: tuple[int, int, int], data: np.ndarray) -> None:
    check_variable(meta, variable)
    check_time(meta, t)
    nc = meta.variables[variable].ncomp
    if data.ndim != 4 or data.shape[3] != nc:
        raise InvalidInput(f"data for {variable!r} must have shape (nz, ny, nx, {nc}); got {data.shape}")
    for c, d, n, name in zip(corner, data.shape[:3], meta.grid.array_shape, "zyx", strict=False):
        if c < 0 or c + d > n:
            raise InvalidInput(f"{name} range [{c}, {c + d}) of the written box must lie in [0, {n}]")


def check_shard(meta: DatasetMeta, variable: str, t: int, shard: tuple[int, int, int]) -> tuple[int, int, int]:
    check_variable(meta, variable)
    check_time(meta, t)
    counts = shard_counts(meta, variable)
    s = tuple(int(i) for i in shard)
    if len(s) != 3 or not all(0 <= i < n for i, n in zip(s, counts, strict=False)):
        raise InvalidInput(f"shard index (sz, sy, sx) must be below {counts}; got {shard}")
    return s  # type: ignore[return-value]


def shard_counts(meta: DatasetMeta, variable: str) -> tuple[int, int, int]:
    """Number of shards along (z, y, x)."""
    shards = meta.array_shards(variable)[1:4]
    return tuple(-(-n // s) for n, s in zip(meta.grid.array_shape, shards, strict=False))  # type: ignore[return-value]


def mark_name(variable: str, t: int, shard: tuple[int, int, int]) -> str:
    return f"{variable}/{t}/{shard[0]}.{shard[1]}.{shard[2]}"


def corrupt(meta: DatasetMeta, url: str, variable: str, t: int, chunk: tuple[int, int, int], why: Any) -> CorruptData:
    return CorruptData(
        f"corrupt data in dataset {meta.id!r} ({url}): variable {variable!r}, time index {t}, "
        f"inner chunk (iz, iy, ix)={chunk} failed its checksum ({why}); it will not be served. "
        "Re-ingest this chunk from the source files.",
        dataset=meta.id, variable=variable, t=t, chunk=list(chunk),
    )


def not_found(url: str, exc: BaseException | None = None) -> NotFound:
    return NotFound(f"no labservice dataset at {url}" + (f" ({exc})" if exc else "")
                    + "; check the path or URL, or create it with create_store()")
