"""A read-only, virtual Zarr v3 group over a field dataset: the objects the HTTP zarr view serves.

The group document (with inline consolidated metadata), the arrays' documents with named dimensions,
generated coordinate arrays, and the stored shard objects byte for byte. Everything that touches zarr's
internals (``zarr.core``: buffers, its event loop) lives here; the router (``labservice.routers.zarr_http``)
only speaks HTTP. Keys outside the layout raise :class:`~labservice.errors.NotFound`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from labservice.errors import NotFound

DIMS = ("time", "z", "y", "x")
COORDS = ("time", "z", "y", "x")
_KEY_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class ZarrObject:
    """One object of the view: a generated document or listing (``body`` set) or a stored shard."""

    kind: Literal["doc", "html", "stored"]
    key: str
    size: int
    etag: str
    media_type: str
    body: bytes | None = None


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
    """(size, version stamp) of a stored object, None when absent."""
    from zarr.core.sync import sync
    from zarr.storage import LocalStore

    if isinstance(zs, LocalStore):  # local: stat gives size and mtime in one call
        try:
            st = os.stat(os.path.join(str(zs.root), key))
        except FileNotFoundError:
            return None
        return st.st_size, f"{st.st_mtime_ns}"
    try:
        return int(sync(zs.getsize(key))), ""
    except FileNotFoundError:
        return None


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


def _variable_doc(ds: Any, variable: str) -> dict[str, Any]:
    raw = read_bytes(raw_store(ds), f"{variable}/zarr.json")
    if raw is None:
        raise NotFound(f"variable {variable!r} of dataset {ds.meta.id!r} has no zarr metadata")
    doc = json.loads(raw)
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


def _shard_key_ok(ds: Any, variable: str, idx: list[str]) -> bool:
    meta = ds.meta
    if len(idx) != 5 or not all(p.isdigit() for p in idx):
        return False
    shape = meta.array_shape(variable)
    shards = meta.array_shards(variable)
    return all(int(i) < -(-n // s) for i, n, s in zip(idx, shape, shards, strict=True))


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


def lookup(ds: Any, key: str) -> ZarrObject:
    """The object at ``key`` with its size and version tag; NotFound outside the layout or never written."""
    kind, what = _resolve(ds, key)
    if kind == "stored":
        found = size_and_stamp(raw_store(ds), what)
        if found is None:  # a shard never written: zarr reads the fill value
            raise NotFound(f"shard {key!r} of dataset {ds.meta.id!r} holds no data (never written)")
        size, stamp = found
        etag = hashlib.sha1(f"{ds.url}|{key}|{size}|{stamp}".encode()).hexdigest()[:24]
        return ZarrObject("stored", what, size, etag, "application/octet-stream")
    media = "application/json" if key.endswith("zarr.json") else "application/octet-stream"
    if kind == "html":
        media = "text/html"
    return ZarrObject(kind, key, len(what), hashlib.sha1(what).hexdigest()[:24], media, what)


def read(ds: Any, obj: ZarrObject, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of an object found by :func:`lookup`."""
    if obj.body is not None:
        return obj.body[start:stop]
    body = read_bytes(raw_store(ds), obj.key, (start, stop))
    if body is None:
        raise NotFound(f"shard {obj.key!r} of dataset {ds.meta.id!r} disappeared while reading")
    return body
