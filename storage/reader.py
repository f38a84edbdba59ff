"""Read boxes of grid values through a shared, byte-bounded LRU cache of inner chunks.

This is the hot path under interpolation and cutouts. :meth:`ChunkReader.region` reads only the inner
chunks a box touches, keeps them in a :class:`ChunkCache` shared by every reader in the process, wraps
indices on periodic axes, and answers the common case (a small stencil inside one chunk) with one cache
lookup and one slice copy.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from labservice.errors import InvalidInput, OutOfDomain
from labservice.storage._common import check_time, check_variable
from labservice.storage.base import FieldStore

DEFAULT_CACHE_BYTES = 1 << 30

__all__ = ["DEFAULT_CACHE_BYTES", "ChunkCache", "ChunkReader", "default_cache"]


def _owner(a: np.ndarray) -> tuple[Any, int]:
    """The object that holds ``a``'s memory (a view keeps all of it alive) and its size in bytes."""
    obj: Any = a
    while True:
        inner = obj.base if isinstance(obj, np.ndarray) else obj.obj if isinstance(obj, memoryview) else None
        if inner is None:
            break
        obj = inner
    if obj is a:
        return a, a.nbytes
    try:
        return obj, memoryview(obj).nbytes
    except TypeError:  # not a buffer we can size: count the view alone
        return a, a.nbytes


class ChunkCache:
    """A thread-safe least-recently-used cache of arrays, bounded by the memory they keep alive.

    Chunks from one coalesced read are views of one buffer: that buffer is counted once, in full, for as
    long as any of its views is cached, so the bound holds on real memory. A view of a buffer larger than
    1/16 of the cache is copied instead, so a small cache still caches.

    Parameters
    ----------
    max_bytes : int
        Upper bound on the memory held by the cached arrays. An array larger than this is not cached at
        all.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise InvalidInput(f"cache size must be >= 0 bytes; got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._owners: dict[int, list[Any]] = {}  # id(owner) -> [owner, bytes, arrays cached from it]
        self._owner_of: dict[Hashable, int] = {}
        self._nbytes = 0
        self._lock = threading.Lock()
        # Chunks readers found here and did not, since creation (the service exports them as metrics).
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            a = self._items.get(key)
            if a is not None:
                self._items.move_to_end(key)
            return a

    def get_many(self, keys: Sequence[Hashable]) -> list[np.ndarray | None]:
        """Look several keys up under one lock acquisition."""
        with self._lock:
            out = []
            for key in keys:
                a = self._items.get(key)
                if a is not None:
                    self._items.move_to_end(key)
                out.append(a)
            return out

    def count(self, hits: int, misses: int) -> None:
        """Add to :attr:`hits` and :attr:`misses` (readers call it once per chunk they needed)."""
        with self._lock:
            self.hits += hits
            self.misses += misses

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Insert ``value`` (made read-only, since readers share it) and evict the oldest to fit."""
        owner, n = _owner(value)
        if owner is not value and n > max(value.nbytes, self.max_bytes // 16):
            value = value.copy()
            owner, n = value, value.nbytes
        value.flags.writeable = False
        if n > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = value
            entry = self._owners.get(id(owner))
            if entry is None:
                self._owners[id(owner)] = [owner, n, 1]
                self._nbytes += n
            else:
                entry[2] += 1
            self._owner_of[key] = id(owner)
            self._evict()

    def _drop(self, key: Hashable) -> None:
        """Remove one item; its owner's bytes are freed with the owner's last cached array (lock held)."""
        del self._items[key]
        entry = self._owners[self._owner_of.pop(key)]
        entry[2] -= 1
        if entry[2] == 0:
            del self._owners[id(entry[0])]
            self._nbytes -= entry[1]

    def _evict(self) -> None:
        while self._nbytes > self.max_bytes and self._items:
            self._drop(next(iter(self._items)))

    def resize(self, max_bytes: int) -> None:
        """Change the bound, evicting as needed."""
        with self._lock:
            self.max_bytes = int(max_bytes)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._owners.clear()
            self._owner_of.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes kept alive by the cached arrays now (never above ``max_bytes``)."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items)


_default: ChunkCache | None = None
_default_lock = threading.Lock()


def default_cache() -> ChunkCache:
    """The process-wide cache, sized by ``LABSERVICE_CACHE_BYTES`` (default 1 GiB) on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ChunkCache(int(os.environ.get("LABSERVICE_CACHE_BYTES", DEFAULT_CACHE_BYTES)))
        return _default


class _VarGeometry:
    """What region() needs about a variable, computed once (pydantic properties are slow per call)."""

    __slots__ = ("chunks", "dtype", "nchunks", "ncomp", "periodic", "shape")

    def __init__(self, store: FieldStore, variable: str) -> None:
        meta = store.meta
        self.chunks = meta.array_chunks(variable)[1:4]
        self.shape = meta.grid.array_shape
        g = meta.grid
        self.periodic = (g.z.periodic, g.y.periodic, g.x.periodic)
        self.ncomp = meta.variables[variable].ncomp
        self.dtype = np.dtype(meta.variables[variable].dtype)
        self.nchunks = tuple(-(-n // c) for n, c in zip(self.shape, self.chunks, strict=False))


def _segments(lo: int, hi: int, n: int, c: int, periodic: bool, axis: str) -> list[tuple[int, int, int, int]]:
    """Split [lo, hi) into pieces (chunk index, start in chunk, stop in chunk, start in output)."""
    if hi < lo:
        raise InvalidInput(f"{axis} range must have hi >= lo; got [{lo}, {hi})")
    if not periodic and (lo < 0 or hi > n):
        raise OutOfDomain(f"{axis} indices must lie in [0, {n}) on the non-periodic {axis} axis; got [{lo}, {hi})")
    out = []
    pos = lo
    while pos < hi:  # bounded: every step advances pos by at least one
        g = pos % n
        ci = g // c
        a = g - ci * c
        b = min(min(c, n - ci * c), a + (hi - pos))
        out.append((ci, a, b, pos - lo))
        pos += b - a
    return out


class ChunkReader:
    """Assemble boxes of one dataset from cached inner chunks.

    Parameters
    ----------
    store : FieldStore
        The dataset to read.
    cache : ChunkCache, optional
        Shared cache; :func:`default_cache` when omitted.
    """

    def __init__(self, store: FieldStore, cache: ChunkCache | None = None) -> None:
        self.store = store
        self.cache = cache if cache is not None else default_cache()
        self._geom: dict[str, _VarGeometry] = {}
        self._lock = threading.Lock()
        self._stats = {"bytes_read": 0, "chunks_read": 0, "cache_hits": 0, "cache_misses": 0}

    @property
    def meta(self) -> Any:
        return self.store.meta

    def geometry(self, variable: str) -> _VarGeometry:
        g = self._geom.get(variable)
        if g is None:
            check_variable(self.store.meta, variable)
            g = self._geom[variable] = _VarGeometry(self.store, variable)
        return g

    # -- statistics --------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counters since creation or the last :meth:`reset_stats`: bytes_read (stored bytes fetched,
        including shard indexes), chunks_read, cache_hits, cache_misses."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            for k in self._stats:
                self._stats[k] = 0

    def _count(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                self._stats[k] += v
        if "cache_hits" in inc or "cache_misses" in inc:
            self.cache.count(inc.get("cache_hits", 0), inc.get("cache_misses", 0))

    # -- chunks ------------------------------------------------------------------------------------
    def chunk(self, variable: str, t: int, index: tuple[int, int, int]) -> np.ndarray:
        """One inner chunk (iz, iy, ix) as a read-only array (nz', ny', nx', ncomp), clipped to the grid."""
        key = (self.store.cache_token, variable, t, index[0], index[1], index[2])
        a = self.cache.get(key)
        if a is not None:
            self._count(cache_hits=1)
            return a
        return self.chunks(variable, t, [index])[0]

    def chunks(self, variable: str, t: int, indices: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        """Several inner chunks; the missing ones are fetched together (concurrently on remote stores)."""
        g = self.geometry(variable)
        check_time(self.store.meta, t)
        checked = []
        for idx in indices:
            idx = (int(idx[0]), int(idx[1]), int(idx[2]))
            if not (0 <= idx[0] < g.nchunks[0] and 0 <= idx[1] < g.nchunks[1] and 0 <= idx[2] < g.nchunks[2]):
                raise InvalidInput(f"chunk index (iz, iy, ix) must be below {g.nchunks}; got {idx}")
            checked.append(idx)
        return self._gather(variable, t, checked, g)

    def _gather(self, variable: str, t: int, indices: list[tuple[int, int, int]], g: _VarGeometry) -> list[np.ndarray]:
        # Indices are known to be valid here; one cache lock round trip for all of them.
        token = self.store.cache_token
        keys = [(token, variable, t, *idx) for idx in indices]
        out = self.cache.get_many(keys)
        missing: dict[tuple[int, int, int], list[int]] = {}
        for i, a in enumerate(out):
            if a is None:
                missing.setdefault(indices[i], []).append(i)
        if not missing:
            self._count(cache_hits=len(indices))
            return out  # type: ignore[return-value]
        check_time(self.store.meta, t)
        coords = list(missing)
        arrays, nbytes = self._fetch(variable, t, coords)
        for c, a in zip(coords, arrays, strict=False):
            a = np.ascontiguousarray(a, dtype=g.dtype)
            self.cache.put((token, variable, t, *c), a)
            for i in missing[c]:
                out[i] = a
        hits = len(indices) - sum(len(v) for v in missing.values())
        self._count(bytes_read=nbytes, chunks_read=len(coords), cache_misses=len(coords), cache_hits=hits)
        return out  # type: ignore[return-value]

    def _fetch(self, variable: str, t: int, coords: list[tuple[int, int, int]]) -> tuple[list[np.ndarray], int]:
        return self.store.read_chunks(variable, t, coords)

    # -- boxes -------------------------------------------------------------------------------------
    def region(self, variable: str, t: int, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """The box ``[lo, hi)`` of grid values, shape (z1-z0, y1-y0, x1-x0, ncomp), a new array.

        Indices are (z, y, x) in array order. On periodic axes they may be negative or beyond the grid
        and wrap around (a box may even be longer than the period); on other axes they must lie in the
        grid, else :class:`OutOfDomain`.
        """
        g = self._geom.get(variable) or self.geometry(variable)
        z0, y0, x0 = int(lo[0]), int(lo[1]), int(lo[2])
        z1, y1, x1 = int(hi[0]), int(hi[1]), int(hi[2])
        cz, cy, cx = g.chunks
        nz, ny, nx = g.shape
        # Fast path: the box lies in the grid and inside one inner chunk.
        if 0 <= z0 < z1 <= nz and 0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx:
            iz, iy, ix = z0 // cz, y0 // cy, x0 // cx
            if iz == (z1 - 1) // cz and iy == (y1 - 1) // cy and ix == (x1 - 1) // cx:
                c = self.chunk(variable, t, (iz, iy, ix))
                oz, oy, ox = iz * cz, iy * cy, ix * cx
                return c[z0 - oz : z1 - oz, y0 - oy : y1 - oy, x0 - ox : x1 - ox].copy()
        segs = [
            _segments(a, b, n, c, p, name)
            for a, b, n, c, p, name in zip((z0, y0, x0), (z1, y1, x1), g.shape, g.chunks, g.periodic, "zyx", strict=False)
        ]
        out = np.empty((z1 - z0, y1 - y0, x1 - x0, g.ncomp), dtype=g.dtype)
        if out.size == 0:
            return out
        wanted = sorted({(sz[0], sy[0], sx[0]) for sz in segs[0] for sy in segs[1] for sx in segs[2]})
        got = dict(zip(wanted, self._gather(variable, t, wanted, g), strict=False))
        for iz, az, bz, oz in segs[0]:
            for iy, ay, by, oy in segs[1]:
                for ix, ax, bx, ox in segs[2]:
                    out[oz : oz + bz - az, oy : oy + by - ay, ox : ox + bx - ax] = got[(iz, iy, ix)][
                        az:bz, ay:by, ax:bx
                    ]
        return out

    def close(self) -> None:
        """Nothing to release: the store is closed by its owner."""
