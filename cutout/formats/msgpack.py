"""``msgpack``: ``{"kind", "version", "attrs", "dims", "coords", "data"}``; arrays are
``{"dtype", "shape", "data": raw bytes}`` and ``data`` is the last entry, so it streams. Never pickle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np

from labservice.cutout.formats.common import one_variable, planes
from labservice.cutout.formats.registry import Format, register
from labservice.cutout.layout import BlockSource
from labservice.errors import InvalidInput, LimitExceeded


def pack_array(a: np.ndarray) -> dict[str, Any]:
    """The msgpack form of an array: ``{"dtype", "shape", "data"}`` with raw little-endian bytes."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def unpack_array(d: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`pack_array` (checks that the byte count matches the shape)."""
    dtype = np.dtype(d["dtype"])
    shape = tuple(int(s) for s in d["shape"])
    if dtype.hasobject or len(d["data"]) != dtype.itemsize * int(np.prod(shape)):
        raise InvalidInput(f"array of dtype {d['dtype']} and shape {list(shape)} does not match its bytes")
    return np.frombuffer(d["data"], dtype=dtype).reshape(shape)


def encode_msgpack(source: BlockSource, stem: str) -> Iterator[bytes | memoryview]:
    layout = source.layout
    one_variable(layout, "msgpack")
    plan = layout.region
    shape = layout.shape(plan)
    nbytes = 4 * int(np.prod(shape))
    if nbytes >= 2**32:
        raise LimitExceeded("a msgpack cutout is limited to 4 GiB; ask for zarr, hdf5 or netcdf instead")
    coords = {name: pack_array(layout.coords(name)) for name in ("x", "y", "z")}
    coords.update({f"{name}_index": pack_array(layout.indices(name)) for name in ("x", "y", "z")})
    coords["time"] = pack_array(np.asarray(layout.times, dtype=np.float64))
    coords["component"] = list(plan.components)
    head = {
        "kind": "labservice.cutout",
        "version": 1,
        "attrs": layout.attrs(),
        "dims": list(layout.dims(plan)),
        "coords": coords,
    }
    packer = msgpack.Packer(use_bin_type=True)
    out = bytearray(packer.pack_map_header(len(head) + 1))
    for key, value in head.items():
        out += packer.pack(key) + packer.pack(value)
    # "data" goes last and its bytes are framed by hand (bin 32), so the array streams block by block.
    out += packer.pack("data") + packer.pack_map_header(3)
    out += packer.pack("dtype") + packer.pack("<f4") + packer.pack("shape") + packer.pack(list(shape))
    out += packer.pack("data") + b"\xc6" + nbytes.to_bytes(4, "big")
    yield bytes(out)
    for block in planes(source):
        yield memoryview(block).cast("B")  # the block's own bytes: no copy


def decode_msgpack(payload: bytes) -> dict[str, Any]:
    """Decode a msgpack cutout: returns ``data``, ``coords`` (arrays), ``dims`` and ``attrs``."""
    try:
        d = msgpack.unpackb(payload, raw=False, max_bin_len=len(payload))
    except Exception as exc:
        raise InvalidInput(f"not a msgpack cutout: {exc}") from exc
    coords = {k: (unpack_array(v) if isinstance(v, dict) else v) for k, v in d["coords"].items()}
    return {"data": unpack_array(d["data"]), "coords": coords, "dims": d["dims"], "attrs": d["attrs"]}


FORMAT = register(
    Format(
        "msgpack",
        "application/msgpack",
        ".msgpack",
        "msgpack (one variable; arrays as raw bytes)",
        encode=encode_msgpack,
        order=70,
        raw_tail=True,
    )
)
