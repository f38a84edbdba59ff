"""msgpack bodies with numpy arrays as ``{dtype, shape, data: raw bytes}`` (the server's wire format)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

MSGPACK = "application/msgpack"
_VIEW_BYTES = 64 << 10  # arrays from this size skip msgpack's buffer


def _encode_tree(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": memoryview(arr).cast("B")}
    if isinstance(obj, dict):
        return {k: _encode_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode_tree(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _decode_array(obj: dict[str, Any]) -> Any:
    if len(obj) == 3 and set(obj) == {"dtype", "shape", "data"} and isinstance(obj["data"], bytes):
        dtype = np.dtype(obj["dtype"]).newbyteorder("<")
        shape = tuple(obj["shape"])
        if len(obj["data"]) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"array payload of shape {shape} has {len(obj['data'])} bytes")
        return np.frombuffer(obj["data"], dtype=dtype).reshape(shape)
    return obj


def pack(payload: dict[str, Any]) -> bytes:
    """Encode a request body: ``msgpack.packb``'s bytes, with each big array copied once, straight into
    place (msgpack copies bins into a growing buffer, twice as slow for millions of points)."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    pieces: list[bytes | memoryview] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            packer.pack_map_header(len(obj))
            for key, value in obj.items():
                packer.pack(key)
                walk(value)
        elif isinstance(obj, memoryview) and obj.nbytes >= _VIEW_BYTES:
            pieces.append(packer.bytes() + b"\xc6" + obj.nbytes.to_bytes(4, "big"))  # bin 32 header
            packer.reset()
            pieces.append(obj)
        else:
            packer.pack(obj)

    walk(_encode_tree(payload))
    pieces.append(packer.bytes())
    return b"".join(pieces)


def unpack(data: bytes) -> Any:
    """Decode a response body; arrays come back as read-only numpy views of the received bytes."""
    return msgpack.unpackb(data, object_hook=_decode_array, raw=False)
