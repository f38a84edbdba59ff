"""A read-only, virtual Zarr v3 group over a field dataset: the objects the HTTP zarr view serves.

The group document (with inline consolidated metadata), the arrays' documents with named dimensions,
generated coordinate arrays, and the stored shard objects byte for byte. Everything that touches zarr's
internals (``zarr.core``: buffers, its event loop) lives here; the router (``labservice.routers.zarr_http``)
only speaks HTTP. Keys outside the layout raise :class:`~labservice.errors.NotFound`.

Shard bytes are served as stored, but never unchecked: every inner chunk a byte range touches, and the
shard index, must pass its crc32c here first (:mod:`labservice.storage.raw_chunks`), else
:class:`~labservice.errors.CorruptData`. For a dataset on local disk the object is found with one ``stat``
and read with one ``preadv`` into a fresh buffer that goes out as the response body (no further copy);
:func:`lookup_now` and :func:`read_now` do that on the caller's thread when it cannot block (a page-cache
hit, ``RWF_NOWAIT``), and answer None otherwise, so the router only pays a thread hop for real disk
waits, documents and remote stores. Parsed shard indexes are cached by file identity (size, mtime, inode).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from labservice.errors import CorruptData, NotFound, StorageUnavailable
from labservice.storage import raw_chunks

DIMS = ("time", "z", "y", "x")
COORDS = ("time", "z", "y", "x")
_KEY_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")
INLINE_MAX = 1 << 20  # a page-cache read up to this size is cheaper inline than a thread hop
INDEX_CACHE_ENTRIES = 1024  # parsed shard indexes kept (~7 KB each for 64 inner chunks)


@dataclass(frozen=True)
class ZarrObject:
    """One object of the view: a generated document or listing (``body`` set) or a stored shard."""

    kind: Literal["doc", "html", "stored"]
    key: str
    size: int
    etag: str
    media_type: str
    body: bytes | None = None
    path: str | None = None  # the shard's file, for a dataset on local disk
    stamp: tuple[int, ...] = ()  # (size, mtime_ns, inode) of that file: what a cached index belongs to


def raw_store(ds: Any) -> Any:
    """The dataset's own zarr store, for byte (range) reads; only zarr-backed datasets have one."""
    zs = ds.store.zarr_store
    if zs is None:
        raise NotFound(f"dataset {ds.meta.id!r} is not stored as zarr, so it has no zarr view; use /cutout")
    return zs


def read_bytes(zs: Any, key: str, rng: tuple[int, int] | None = None) -> bytes | None:
    """Bytes of ``key`` (or of [start, stop)), None when absent; runs zarr's coroutine on its own loop."""
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    br = None if rng is None else RangeByteRequest(rng[0], rng[1])
    buf = sync(zs.get(key, prototype=default_buffer_prototype(), byte_range=br))
    return None if buf is None else buf.to_bytes()


def size_and_stamp(zs: Any, key: str) -> tuple[int, str] | None:
    """(size, version stamp) of a stored object in a remote store, None when absent."""
    from zarr.core.sync import sync

    try:
        return int(sync(zs.getsize(key))), ""
    except FileNotFoundError:
        return None


_roots: dict[str, str | None] = {}


def local_root(ds: Any) -> str | None:
    """The folder of a dataset stored on local disk (None for remote stores)."""
    from zarr.storage import LocalStore

    if ds.url not in _roots:
        zs = raw_store(ds)
        _roots[ds.url] = str(zs.root) if isinstance(zs, LocalStore) else None
    return _roots[ds.url]


class _WouldBlock(Exception):
    """A read that :func:`read_now` cannot finish without waiting for the disk."""


_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def _pread(path: str, start: int, stop: int, nowait: bool, stamp: tuple[int, ...]) -> memoryview:
    """Bytes [start, stop) of a file in a new buffer (no zero fill, no further copy), if the file is still
    the one ``stamp`` (size, mtime, inode) names. With ``nowait``, only from the page cache: raises
    _WouldBlock when any of it would wait for the disk."""
    if nowait and _NOWAIT is None:
        raise _WouldBlock
    n = stop - start
    buf = memoryview(np.empty(n, dtype=np.uint8))
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"shard {path!r} disappeared while reading; try again") from None
    try:
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns, st.st_ino) != stamp:  # rewritten since lookup: bytes and index
            raise StorageUnavailable(f"shard {path!r} was rewritten while being read; try again")
        got = 0
        while got < n:
            try:
                k = os.preadv(fd, [buf[got:]], start + got, _NOWAIT if nowait else 0)
            except OSError as exc:
                if nowait:  # not cached, or a file system without RWF_NOWAIT: a thread will read it
                    raise _WouldBlock from exc
                raise
            if k == 0:
                raise NotFound(f"shard {path!r} shrank while reading; try again")
            got += k
            if nowait and got < n:  # partly cached
                raise _WouldBlock
    finally:
        os.close(fd)
    return buf


# -- checksums of the bytes served -------------------------------------------------------------------
_layouts: dict[tuple[str, str], raw_chunks.ShardLayout | None] = {}
_indexes: OrderedDict[tuple[str, tuple[int, ...]], raw_chunks.ShardIndex] = OrderedDict()
_index_lock = threading.Lock()


def _layout(ds: Any, variable: str, load: bool = True) -> raw_chunks.ShardLayout | None:
    """The checksum layout of a stored variable (read once per dataset); raises _WouldBlock when not
    known yet and ``load`` is False."""
    k = (ds.url, variable)
    if k not in _layouts:
        if not load:
            raise _WouldBlock
        _layouts[k] = raw_chunks.shard_layout(json.loads(_stored_doc(ds, variable)))
    return _layouts[k]


def _corrupt(ds: Any, obj: ZarrObject, layout: raw_chunks.ShardLayout, chunk: int | None) -> CorruptData:
    from labservice.storage._common import corrupt

    variable, _, *idx = obj.key.split("/")
    t, shard = int(idx[0]), [int(i) for i in idx[1:4]]
    per = layout.per[1:4]
    first = tuple(s * p for s, p in zip(shard, per, strict=True))
    if chunk is None:
        return corrupt(ds.meta, ds.url, variable, t, first, f"the index of shard {obj.key!r} is damaged")
    local = np.unravel_index(chunk, layout.per)[1:4]
    at = tuple(f + int(i) for f, i in zip(first, local, strict=True))
    return corrupt(ds.meta, ds.url, variable, t, at, f"crc32c mismatch in shard {obj.key!r}")


def _index(obj: ZarrObject, layout: raw_chunks.ShardLayout, start: int, body: memoryview,
           read: Any) -> raw_chunks.ShardIndex | None:
    """The shard's parsed index (checksum verified), None if damaged. From the cache only when ``body``
    does not include index bytes: index bytes about to be served are always checked themselves."""
    at = obj.size - layout.index_nbytes
    stop = start + len(body)
    cache_key = (obj.path or "", obj.stamp)
    if obj.stamp and stop <= at:
        with _index_lock:
            index = _indexes.get(cache_key)
            if index is not None:
                _indexes.move_to_end(cache_key)
                return index
    if at < 0:
        return None
    raw = body[at - start :] if start <= at and stop == obj.size else read(at, obj.size)
    index = raw_chunks.parse_index(layout, bytes(raw))
    if index is not None and obj.stamp:
        with _index_lock:
            _indexes[cache_key] = index
            if len(_indexes) > INDEX_CACHE_ENTRIES:
                _indexes.popitem(last=False)
    return index


def _verify(ds: Any, obj: ZarrObject, start: int, body: memoryview, read: Any, load: bool) -> None:
    """Raise CorruptData unless the shard index and every inner chunk that ``body`` touches pass."""
    layout = _layout(ds, obj.key.split("/", 1)[0], load)
    if layout is None:  # a codec chain without checksums: nothing to check (zarr_.py never writes one)
        return
    index = _index(obj, layout, start, body, read)
    if index is None:
        raise _corrupt(ds, obj, layout, None)
    data = body[: max(0, min(start + len(body), obj.size - layout.index_nbytes) - start)]
    try:
        raw_chunks.verify_span(layout, index, obj.size, start, data, read)
    except raw_chunks.DamagedShard as exc:
        raise _corrupt(ds, obj, layout, exc.chunk) from None


# -- the layout --------------------------------------------------------------------------------------
def _coord_values(meta: Any, name: str) -> np.ndarray:
    if name == "time":
        return np.asarray(meta.times, dtype="<f8")
    return getattr(meta.grid, name).coords().astype("<f8")


def _coord_doc(meta: Any, name: str) -> dict[str, Any]:
    n = len(_coord_values(meta, name))
    attrs: dict[str, Any] = {"long_name": name}
    if name != "time":
        axis = getattr(meta.grid, name)
        attrs["periodic"] = bool(axis.periodic)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [n],
        "data_type": "float64",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [n]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": "NaN",
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": attrs,
        "dimension_names": [name],
    }


def _stored_doc(ds: Any, variable: str) -> bytes:
    raw = read_bytes(raw_store(ds), f"{variable}/zarr.json")
    if raw is None:
        raise NotFound(f"variable {variable!r} of dataset {ds.meta.id!r} has no zarr metadata")
    return raw


def _variable_doc(ds: Any, variable: str) -> dict[str, Any]:
    doc = json.loads(_stored_doc(ds, variable))
    doc["dimension_names"] = [*DIMS, f"{variable}_component"]
    return doc


def _group_doc(ds: Any) -> dict[str, Any]:
    meta = ds.meta
    members: dict[str, Any] = {name: _coord_doc(meta, name) for name in COORDS}
    for variable in meta.variables:
        members[variable] = _variable_doc(ds, variable)
    attrs = {"id": meta.id, "title": meta.title, "description": meta.description, "kind": meta.kind,
             "labservice": meta.model_dump(mode="json")}
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": attrs,
        "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": members},
    }


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, allow_nan=False).encode()


def _check_key(key: str) -> list[str]:
    """Split a key into parts; reject traversal, absolute paths and odd characters."""
    if not key or key.startswith("/") or "\\" in key:
        raise NotFound(f"no such key {key!r}; start at zarr.json")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _KEY_PART.match(part):
            raise NotFound(f"no such key {key!r}; keys are zarr.json, <array>/zarr.json and <array>/c/...")
    return parts


_shard_grids: dict[tuple[str, str], tuple[int, ...]] = {}


def _shard_key_ok(ds: Any, variable: str, idx: list[str]) -> bool:
    if len(idx) != 5 or not all(p.isdigit() for p in idx):
        return False
    grid = _shard_grids.get((ds.url, variable))
    if grid is None:
        meta = ds.meta
        shape, shards = meta.array_shape(variable), meta.array_shards(variable)
        grid = tuple(-(-n // s) for n, s in zip(shape, shards, strict=True))
        _shard_grids[(ds.url, variable)] = grid
    return all(int(i) < n for i, n in zip(idx, grid, strict=True))


def _listing(names: list[str]) -> bytes:
    # fsspec's HTTP filesystem lists a "folder" by reading the hrefs of an HTML page; zarr lists the group
    # that way when asked not to use consolidated metadata.
    links = "".join(f'<li><a href="{n}">{n}</a></li>' for n in names)
    return f"<!DOCTYPE html><html><body><ul>{links}</ul></body></html>".encode()


def _resolve(ds: Any, key: str) -> tuple[str, Any]:
    """("doc", bytes), ("html", bytes) for folder listings or ("stored", key) for shard objects."""
    meta = ds.meta
    if key.strip("/") == "":
        return "html", _listing(["zarr.json", *COORDS, *meta.variables])
    if key.rstrip("/") in (*COORDS, *meta.variables) and "/" not in key.rstrip("/"):
        return "html", _listing(["zarr.json"])
    parts = _check_key(key)
    if parts == ["zarr.json"]:
        return "doc", _json_bytes(_group_doc(ds))
    name = parts[0]
    if name in COORDS:
        if parts[1:] == ["zarr.json"]:
            return "doc", _json_bytes(_coord_doc(meta, name))
        if parts[1:] == ["c", "0"]:
            return "doc", _coord_values(meta, name).tobytes()
    elif name in meta.variables:
        if parts[1:] == ["zarr.json"]:
            return "doc", _json_bytes(_variable_doc(ds, name))
        if len(parts) > 2 and parts[1] == "c" and _shard_key_ok(ds, name, parts[2:]):
            return "stored", key
    raise NotFound(f"no such key {key!r} in dataset {meta.id!r}; start at zarr.json")


def _stored(ds: Any, key: str, root: str | None) -> ZarrObject:
    if root is not None:  # local: one stat gives size, version and file identity
        path = os.path.join(root, key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            found = None
        else:
            found = st.st_size, f"{st.st_mtime_ns}"
    else:
        path, st, found = None, None, size_and_stamp(raw_store(ds), key)
    if found is None:  # a shard never written: zarr reads the fill value
        raise NotFound(f"shard {key!r} of dataset {ds.meta.id!r} holds no data (never written)")
    size, stamp = found
    etag = hashlib.sha1(f"{ds.url}|{key}|{size}|{stamp}".encode()).hexdigest()[:24]
    ident = (size, st.st_mtime_ns, st.st_ino) if st is not None else ()
    return ZarrObject("stored", key, size, etag, "application/octet-stream", path=path, stamp=ident)


def lookup_now(ds: Any, key: str) -> ZarrObject | None:
    """:func:`lookup` without a thread: a shard of a dataset on local disk (one ``stat``); None for
    anything that needs more (documents, remote stores). Raises NotFound like :func:`lookup`."""
    parts = key.split("/")
    if len(parts) < 3 or parts[1] != "c" or parts[0] not in ds.meta.variables:
        return None
    root = local_root(ds)
    if root is None:
        return None
    _resolve(ds, key)  # NotFound outside the layout
    return _stored(ds, key, root)


def lookup(ds: Any, key: str) -> ZarrObject:
    """The object at ``key`` with its size and version tag; NotFound outside the layout or never written."""
    kind, what = _resolve(ds, key)
    if kind == "stored":
        return _stored(ds, what, local_root(ds))
    media = "application/json" if key.endswith("zarr.json") else "application/octet-stream"
    if kind == "html":
        media = "text/html"
    return ZarrObject(kind, key, len(what), hashlib.sha1(what).hexdigest()[:24], media, what)


def read_now(ds: Any, obj: ZarrObject, start: int, stop: int) -> bytes | memoryview | None:
    """:func:`read` without a thread when it cannot block: a document, or up to :data:`INLINE_MAX` bytes of
    a local shard that are all in the page cache (and its index too). None when a thread must read it."""
    if obj.body is not None:
        return obj.body[start:stop]
    if obj.path is None or stop - start > INLINE_MAX:
        return None
    path = obj.path
    try:
        body = _pread(path, start, stop, True, obj.stamp)
        _verify(ds, obj, start, body, lambda a, b: _pread(path, a, b, True, obj.stamp), load=False)
    except _WouldBlock:
        return None
    return body


def read(ds: Any, obj: ZarrObject, start: int, stop: int) -> bytes | memoryview:
    """Bytes [start, stop) of an object found by :func:`lookup`; a shard's only after their checksums pass."""
    if obj.body is not None:
        return obj.body[start:stop]
    if obj.path is not None:
        path = obj.path
        body = _pread(path, start, stop, False, obj.stamp)
        _verify(ds, obj, start, body, lambda a, b: _pread(path, a, b, False, obj.stamp), load=True)
        return body
    zs = raw_store(ds)

    def get(a: int, b: int) -> memoryview:
        got = read_bytes(zs, obj.key, (a, b))
        if got is None:
            raise NotFound(f"shard {obj.key!r} of dataset {ds.meta.id!r} disappeared while reading")
        return memoryview(got)

    body = get(start, stop)
    _verify(ds, obj, start, body, get, load=True)
    return body
