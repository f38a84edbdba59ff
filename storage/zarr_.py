"""The Zarr v3 back end: one sharded array per variable, checksummed inner chunks, any fsspec URL.

Layout of a dataset group::

    zarr.json                      group; attributes["labservice"] = DatasetMeta as JSON
    <variable>/zarr.json           array [t, z, y, x, c]; sharding codec, inner codecs bytes + crc32c
    <variable>/c/t/sz/sy/sx/0      one shard: inner chunks in Morton order, then the shard index
    <variable>/done/<t>/<sz>.<sy>.<sx>   empty marker: this shard was completely written (zarr ignores it)

Stock zarr-python reads it: ``zarr.open_group(url)["velocity"][t, z, y, x, c]``.

Single inner chunks are read here without zarr's array machinery: the shard index is fetched once per
shard and cached, then each chunk is one byte-range read, its crc32c checked, and its bytes viewed as an
array. That halves the requests per chunk compared with zarr's partial-shard reads (which re-read the
index each time) and lets us count the bytes we read.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np
import zarr
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from labservice.errors import InvalidInput, LabError
from labservice.storage import _common as common
from labservice.storage.base import FieldStore
from labservice.storage.byte_ranges import coalesce
from labservice.storage.metadata import DatasetMeta
from labservice.storage.obstore_reads import obstore_reads

_INDEX_CACHE_ENTRIES = 4096

__all__ = ["ZarrStore"]


def _open_zarr_store(url: str, storage_options: dict[str, Any] | None, read_only: bool) -> zarr.abc.store.Store:
    if common.is_local(url):
        return LocalStore(common.local_path(url), read_only=read_only)
    # Per STYLE.md: give zarr the URL, never a ready-made synchronous filesystem (event-loop clash).
    return FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)


def _mark_key(variable: str, t: int, shard: tuple[int, int, int]) -> str:
    # Inside the array's folder: zarr never lists it as a member and deleting the array removes it.
    return f"{variable}/done/{t}/{shard[0]}.{shard[1]}.{shard[2]}"


def _dtype_of(meta: DatasetMeta, variable: str) -> np.dtype:
    return np.dtype(meta.variables[variable].dtype).newbyteorder("<")


class ZarrStore(FieldStore):
    """A dataset stored as a Zarr v3 group (local path, ``memory://`` or ``s3://``)."""

    backend: ClassVar[str] = "zarr"

    def __init__(self, url: str, zstore: Any, group: zarr.Group, meta: DatasetMeta,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options  # kept so other processes (jobs) can reopen the store
        self.meta = meta
        self._zstore = zstore
        self._group = group
        self._arrays: dict[str, zarr.Array] = {}
        self._local_root = common.local_path(url) if common.is_local(url) else None
        self._index_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._fast: dict[str, bool] = {}
        self.writable = not zstore.read_only
        # Neighbouring inner chunks of a shard are read with one ranged GET (see byte_ranges.coalesce);
        # the switch and sizes are attributes so benchmarks and tests can compare both ways.
        self.coalesce = True
        self.coalesce_gap = 0  # bytes of unrequested chunks a merged read may carry
        self.max_read_bytes = 8 << 20  # bytes per merged read, so big boxes still read concurrently
        self.requests = 0  # ranged reads issued (GETs on object storage), for benchmarks and tests
        # Chunk and index reads on S3 go through obstore when the options allow (obstore_reads.py);
        # setting transport = "zarr" puts them back on zarr's own store (s3fs), as benchmarks/s3.py does.
        self._obstore = None if self._local_root is not None else obstore_reads(url, storage_options)
        self.transport = "obstore" if self._obstore is not None else "zarr"
        # Readers key their cache on this; renewed on every write so no stale chunk is served.
        self.cache_token = f"{url}#{uuid.uuid4().hex}"

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, url: str, meta: DatasetMeta, storage_options: dict[str, Any] | None = None, overwrite: bool = False,
        compress: bool = False,
    ) -> ZarrStore:
        """Create the group and one empty sharded array per variable.

        ``compress=True`` adds zstd before the checksum; turbulence data compresses little, so the
        default stores raw little-endian values (fastest to serve).
        """
        with common.remote_errors(url, "creating the dataset"):
            zstore = _open_zarr_store(url, storage_options, read_only=False)
            if not overwrite and sync(zstore.exists("zarr.json")):
                raise InvalidInput(f"a dataset already exists at {url}; pass overwrite=True to replace it")
            group = zarr.open_group(zstore, mode="w" if overwrite else "w-",
                                    attributes={common.META_KEY: meta.model_dump(mode="json")})
            for name, var in meta.variables.items():
                compressors: list[Any] = [ZstdCodec(level=1)] if compress else []
                group.create_array(
                    name,
                    shape=meta.array_shape(name),
                    dtype=var.dtype,
                    chunks=meta.array_chunks(name),
                    shards=meta.array_shards(name),
                    serializer=BytesCodec(endian="little"),
                    compressors=[*compressors, Crc32cCodec()],
                    fill_value=np.nan,
                    dimension_names=["t", "z", "y", "x", "c"],
                    attributes={"components": var.components, "units": var.units},
                )
        return cls(url, zstore, group, meta, storage_options)

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any] | None = None, mode: str = "r") -> ZarrStore:
        if mode not in ("r", "r+"):
            raise InvalidInput(f"mode must be 'r' or 'r+'; got {mode!r}")
        with common.remote_errors(url, "opening the dataset"):
            zstore = _open_zarr_store(url, storage_options, read_only=mode == "r")
            try:
                group = zarr.open_group(zstore, mode=mode)
            except FileNotFoundError as exc:
                raise common.not_found(url) from exc
            attrs = group.attrs.asdict()
        if common.META_KEY not in attrs:
            raise common.not_found(url, ValueError(f"the zarr group has no {common.META_KEY!r} attribute"))
        return cls(url, zstore, group, DatasetMeta.model_validate(attrs[common.META_KEY]), storage_options)

    def update_meta(self, meta: DatasetMeta) -> None:
        with common.remote_errors(self.url, "writing metadata"):
            self._group.attrs[common.META_KEY] = meta.model_dump(mode="json")
        self.meta = meta

    @property
    def zarr_store(self) -> zarr.abc.store.Store:
        """The underlying zarr store, for byte-level reads of stored objects (the HTTP zarr view)."""
        return self._zstore

    def close(self) -> None:
        self._zstore.close()

    # -- helpers -----------------------------------------------------------------------------------
    def array(self, variable: str) -> zarr.Array:
        """The zarr array of one variable."""
        arr = self._arrays.get(variable)
        if arr is None:
            common.check_variable(self.meta, variable)
            with common.remote_errors(self.url, f"opening variable {variable!r}"):
                arr = self._group[variable]
            self._arrays[variable] = arr  # type: ignore[assignment]
            self._fast[variable] = self._fast_path_ok(arr)  # type: ignore[arg-type]
        return arr  # type: ignore[return-value]

    @staticmethod
    def _fast_path_ok(arr: zarr.Array) -> bool:
        # Our direct chunk reader understands exactly the layout create() writes; anything else goes
        # through zarr's own (slower) path.
        codecs = arr.metadata.codecs if hasattr(arr.metadata, "codecs") else ()
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return False
        sc = codecs[0]
        inner = list(sc.codecs)
        ok_inner = (
            len(inner) in (2, 3)
            and isinstance(inner[0], BytesCodec)
            and str(getattr(inner[0].endian, "value", inner[0].endian)) in ("little", "None")
            and isinstance(inner[-1], Crc32cCodec)
            and (len(inner) == 2 or isinstance(inner[1], ZstdCodec))
        )
        idx = list(sc.index_codecs)
        ok_index = len(idx) == 2 and isinstance(idx[0], BytesCodec) and isinstance(idx[1], Crc32cCodec)
        return ok_inner and ok_index and sc.index_location.value == "end"

    def _shard_key(self, variable: str, t: int, shard: tuple[int, int, int]) -> str:
        return f"{variable}/c/{t}/{shard[0]}/{shard[1]}/{shard[2]}/0"

    def _get_ranges(self, requests: list[tuple[str, Any]]) -> list[bytes | memoryview | None]:
        """Fetch (key, byte_range) pairs; byte_range is (start, stop), ("suffix", n) or None."""
        with self._lock:
            self.requests += len(requests)
        if self._local_root is not None:
            return [self._get_local(key, rng) for key, rng in requests]

        async def one(key: str, rng: Any) -> memoryview | None:
            if rng is None:
                br = None
            elif rng[0] == "suffix":
                br = SuffixByteRequest(rng[1])
            else:
                br = RangeByteRequest(rng[0], rng[1])
            buf = await self._zstore.get(key, prototype=default_buffer_prototype(), byte_range=br)
            return None if buf is None else memoryview(buf.as_numpy_array())  # no copy, unlike to_bytes()

        async def many() -> list[memoryview | None]:
            # Concurrent requests: remote latency overlaps instead of adding up.
            return list(await asyncio.gather(*(one(k, r) for k, r in requests)))

        with common.remote_errors(self.url, "reading chunks"):
            if self._obstore is not None and self.transport == "obstore":
                return sync(self._obstore.get_many(requests))  # type: ignore[return-value]
            return sync(many())

    def _get_local(self, key: str, rng: Any) -> bytes | None:
        path = f"{self._local_root}/{key}"
        try:
            with open(path, "rb") as f:
                if rng is None:
                    return f.read()
                if rng[0] == "suffix":
                    f.seek(-rng[1], 2)
                    return f.read(rng[1])
                f.seek(rng[0])
                return f.read(rng[1] - rng[0])
        except FileNotFoundError:
            return None

    def _shard_indexes(self, variable: str, t: int, shards: list[tuple[int, int, int]],
                       nbytes: list[int]) -> dict[tuple[int, int, int], np.ndarray | None]:
        """Each shard's (chunks per shard z, y, x, 2) offsets and lengths, or None when the shard does not
        exist. Indexes not cached yet are fetched together (one concurrent batch, not one round trip each)."""
        found: dict[tuple[int, int, int], np.ndarray | None] = {}
        with self._lock:
            for shard in shards:
                idx = self._index_cache.get((variable, t, shard))
                if idx is not None:
                    self._index_cache.move_to_end((variable, t, shard))
                    found[shard] = idx
        missing = [shard for shard in shards if shard not in found]
        if not missing:
            return found
        _, per, _ = self._chunk_geometry(variable)
        size = int(np.prod(per)) * 16 + 4
        raws = self._get_ranges([(self._shard_key(variable, t, shard), ("suffix", size)) for shard in missing])
        for shard, raw in zip(missing, raws, strict=True):
            if raw is None:
                found[shard] = None
                continue
            nbytes[0] += len(raw)
            if len(raw) != size or not common.crc_ok(raw):
                first = tuple(s * p for s, p in zip(shard, per, strict=True))
                raise common.corrupt(self.meta, self.url, variable, t, first, f"the index of shard {shard} is damaged")
            idx = np.frombuffer(raw[:-4], dtype="<u8").reshape(*per, 2)
            found[shard] = idx
            with self._lock:
                self._index_cache[(variable, t, shard)] = idx
                if len(self._index_cache) > _INDEX_CACHE_ENTRIES:
                    self._index_cache.popitem(last=False)
        return found

    def _forget_indexes(self, variable: str, t: int) -> None:
        with self._lock:
            for key in [k for k in self._index_cache if k[0] == variable and k[1] == t]:
                del self._index_cache[key]

    # -- data --------------------------------------------------------------------------------------
    def read_box(self, variable: str, t: int, z: slice, y: slice, x: slice) -> np.ndarray:
        z, y, x = common.check_read(self.meta, variable, t, z, y, x)
        arr = self.array(variable)
        try:
            with common.remote_errors(self.url, f"reading {variable!r}"):
                return np.asarray(arr[t, z, y, x, :])
        except ValueError as exc:
            if "checksum" not in str(exc).lower():
                raise
            # zarr does not say which chunk failed: find it with our own reader so the message names it.
            self._raise_first_corrupt(variable, t, z, y, x, exc)
            raise

    def _raise_first_corrupt(self, variable: str, t: int, z: slice, y: slice, x: slice, exc: Exception) -> None:
        cz, cy, cx = self.meta.array_chunks(variable)[1:4]
        coords = [(iz, iy, ix)
                  for iz in range(z.start // cz, -(-z.stop // cz))
                  for iy in range(y.start // cy, -(-y.stop // cy))
                  for ix in range(x.start // cx, -(-x.stop // cx))]
        for c in coords:
            self.read_chunks(variable, t, [c])
        raise common.corrupt(self.meta, self.url, variable, t, coords[0] if coords else (0, 0, 0), exc)

    def read_chunks(self, variable: str, t: int, coords: list[tuple[int, int, int]]) -> tuple[list[np.ndarray], int]:
        """Read whole inner chunks (iz, iy, ix) of time step ``t``.

        Returns the chunks (each clipped to the grid, shape (nz', ny', nx', ncomp)) and the number of
        stored bytes fetched. Remote stores fetch all requested chunks concurrently.
        """
        self.array(variable)  # opens the array and decides whether the direct path applies
        common.check_time(self.meta, t)
        if not self._fast[variable]:
            return self._read_chunks_zarr(variable, t, coords)
        try:
            return self._read_chunks_direct(variable, t, coords)
        except LabError as exc:
            if exc.code != "corrupt_data":
                raise
            # A writer may have rewritten the shard since we cached its index: retry once with fresh ones.
            self._forget_indexes(variable, t)
            return self._read_chunks_direct(variable, t, coords)

    def _chunk_geometry(self, variable: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        cc = self.meta.array_chunks(variable)
        per = tuple(s // c for s, c in zip(self.meta.array_shards(variable)[1:4], cc[1:4], strict=False))
        return cc, per, self.meta.grid.array_shape

    def _read_chunks_direct(self, variable: str, t: int, coords: list[tuple[int, int, int]]) -> tuple[list[np.ndarray], int]:
        cc, per, shape = self._chunk_geometry(variable)
        dtype = _dtype_of(self.meta, variable)
        compressed = len(self.array(variable).metadata.codecs[0].codecs) == 3  # type: ignore[attr-defined]
        nbytes = [0]
        shard_of = [(c[0] // per[0], c[1] // per[1], c[2] // per[2]) for c in coords]
        indexes = self._shard_indexes(variable, t, list(dict.fromkeys(shard_of)), nbytes)
        # Byte range of each stored chunk, grouped by shard object; None: never written.
        spans: list[tuple[int, int] | None] = []
        by_key: dict[str, list[int]] = {}
        for i, (c, shard) in enumerate(zip(coords, shard_of, strict=True)):
            idx = indexes[shard]
            entry = None if idx is None else idx[c[0] % per[0], c[1] % per[1], c[2] % per[2]]
            if entry is None or entry[0] == common.EMPTY_CHUNK:
                spans.append(None)
                continue
            off = int(entry[0])
            spans.append((off, off + int(entry[1])))
            by_key.setdefault(self._shard_key(variable, t, shard), []).append(i)
        requests: list[tuple[str, Any]] = []
        read_of: list[int] = [-1] * len(coords)  # which request holds chunk i
        for key, members in by_key.items():
            ranges = [spans[i] for i in members]
            if self.coalesce:
                reads = coalesce(ranges, self.coalesce_gap, self.max_read_bytes)  # type: ignore[arg-type]
            else:
                reads = [(r[0], r[1], [k]) for k, r in enumerate(ranges)]  # type: ignore[index]
            for start, stop, covered in reads:
                for k in covered:
                    read_of[members[k]] = len(requests)
                requests.append((key, (start, stop)))
        raws = self._get_ranges(requests) if requests else []
        nbytes[0] += sum(len(r) for r in raws if r is not None)
        out = []
        for i, c in enumerate(coords):
            clip = tuple(min(cc[1 + a], shape[a] - c[a] * cc[1 + a]) for a in range(3))
            span = spans[i]
            if span is None:  # never written: the fill value, like zarr
                out.append(np.full((*clip, cc[4]), np.nan, dtype=dtype))
                continue
            raw = raws[read_of[i]]
            base = requests[read_of[i]][1][0]
            chunk = None if raw is None else memoryview(raw)[span[0] - base : span[1] - base]
            if chunk is None or len(chunk) != span[1] - span[0] or len(chunk) < 4:
                raise common.corrupt(self.meta, self.url, variable, t, c, "the chunk bytes are missing")
            if not common.crc_ok(chunk):
                raise common.corrupt(self.meta, self.url, variable, t, c, "crc32c mismatch")
            body = chunk[:-4]
            if compressed:
                from numcodecs import Zstd

                body = memoryview(Zstd().decode(body))
            a = np.frombuffer(body, dtype=dtype).reshape(cc[1:])
            if clip != tuple(cc[1:4]):
                a = a[: clip[0], : clip[1], : clip[2]]
            out.append(a)
        return out, nbytes[0]

    def _read_chunks_zarr(self, variable: str, t: int, coords: list[tuple[int, int, int]]) -> tuple[list[np.ndarray], int]:
        cc = self.meta.array_chunks(variable)[1:4]
        out = []
        for c in coords:
            lo = [i * n for i, n in zip(c, cc, strict=False)]
            box = self.read_box(variable, t, *(slice(a, min(a + n, m)) for a, n, m in
                                               zip(lo, cc, self.meta.grid.array_shape, strict=False)))
            out.append(box)
        return out, sum(a.nbytes for a in out)

    def write_box(self, variable: str, t: int, z0: int, y0: int, x0: int, data: np.ndarray) -> None:
        common.check_write(self.meta, variable, t, (z0, y0, x0), data)
        arr = self.array(variable)
        nz, ny, nx = data.shape[:3]
        with common.remote_errors(self.url, f"writing {variable!r}"):
            arr[t, z0 : z0 + nz, y0 : y0 + ny, x0 : x0 + nx, :] = data
        self._forget_indexes(variable, t)
        self.cache_token = f"{self.url}#{uuid.uuid4().hex}"

    def write_shard(self, variable: str, t: int, shard: tuple[int, int, int], components: list[np.ndarray]) -> None:
        """Write one whole shard from one (nz, ny, nx) array per component (the shard's box clipped to the
        grid, any strides and numeric dtype): the same bytes as ``write_box``, built by
        :mod:`~labservice.storage.shard_writer` without zarr's per-chunk pipeline."""
        from labservice.storage import shard_writer

        s = common.check_shard(self.meta, variable, t, shard)
        arr = self.array(variable)
        size = self.meta.array_shards(variable)[1:4]
        lo = [i * n for i, n in zip(s, size, strict=True)]
        if not self._fast[variable] or len(arr.metadata.codecs[0].codecs) != 2:  # type: ignore[attr-defined]
            self.write_box(variable, t, *lo, np.stack(components, axis=-1).astype(_dtype_of(self.meta, variable)))
            return
        cc, per, grid = self._chunk_geometry(variable)
        shard_writer.check_box(variable, components, self.meta.variables[variable].ncomp,
                               tuple(min(a + n, m) - a for a, n, m in zip(lo, size, grid, strict=True)))
        geometry = (components, _dtype_of(self.meta, variable), cc[1:4], per)
        key = self._shard_key(variable, t, s)
        with common.remote_errors(self.url, f"writing {variable!r}"):
            if self._local_root is not None:
                shard_writer.write_local(f"{self._local_root}/{key}", shard_writer.shard_pieces(*geometry))  # type: ignore[arg-type]
            elif (encoded := shard_writer.encode_shard(*geometry)) is None:  # type: ignore[arg-type]
                sync(self._zstore.delete(key))
            else:
                sync(self._zstore.set(key, default_buffer_prototype().buffer.from_bytes(encoded)))
        self._forget_indexes(variable, t)
        self.cache_token = f"{self.url}#{uuid.uuid4().hex}"

    # -- resumable ingest --------------------------------------------------------------------------
    def shard_done(self, variable: str, t: int, shard: tuple[int, int, int]) -> bool:
        s = common.check_shard(self.meta, variable, t, shard)
        with common.remote_errors(self.url, "checking a shard mark"):
            return bool(sync(self._zstore.exists(_mark_key(variable, t, s))))

    def shards_done(self, variable: str, t: int) -> set[tuple[int, int, int]]:
        """Every shard of time step t marked done, from one listing (not one request per shard)."""
        common.check_shard(self.meta, variable, t, (0, 0, 0))
        prefix = _mark_key(variable, t, (0, 0, 0)).rsplit("/", 1)[0] + "/"

        async def names() -> list[str]:
            return [key async for key in self._zstore.list_prefix(prefix)]

        with common.remote_errors(self.url, "listing the shard marks"):
            keys = sync(names())
        done = set()
        for key in keys:
            parts = key.rsplit("/", 1)[-1].split(".")
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                done.add((int(parts[0]), int(parts[1]), int(parts[2])))
        return done

    def mark_shard_done(self, variable: str, t: int, shard: tuple[int, int, int]) -> None:
        s = common.check_shard(self.meta, variable, t, shard)
        buf = default_buffer_prototype().buffer.from_bytes(b"")
        with common.remote_errors(self.url, "writing a shard mark"):
            sync(self._zstore.set(_mark_key(variable, t, s), buf))
