"""msgpack bodies with numpy arrays as ``{dtype, shape, data: raw bytes}`` (the server's wire format)."""

from __future__ import annotations

import math
from collections.abc import Callable
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
    is_array = len(obj) == 3 and set(obj) == {"dtype", "shape", "data"}
    if is_array and isinstance(obj["data"], (bytes, memoryview)):
        dtype = np.dtype(obj["dtype"]).newbyteorder("<")
        shape = tuple(obj["shape"])
        nbytes = memoryview(obj["data"]).nbytes
        if nbytes != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"array payload of shape {shape} has {nbytes} bytes")
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


def unpack(data: Any) -> Any:
    """Decode a response body; arrays come back as numpy views of the received bytes (read-only for bytes,
    writable for a writable buffer such as :func:`labclient.transport.read_body`'s). Big arrays are views
    of ``data`` itself, small ones of msgpack's copies."""
    if memoryview(data).nbytes < _VIEW_BYTES:
        return msgpack.unpackb(data, object_hook=_decode_array, raw=False)
    return unpack_views(data, object_hook=_decode_array)


# -- zero-copy decoding of big bodies ----------------------------------------------------------------
class _SliceReader:
    """A file-like view of a buffer from an offset, for ``msgpack.Unpacker`` (copies only what it reads)."""

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def read(self, n: int = -1) -> bytes:
        end = len(self.buf) if n < 0 else min(len(self.buf), self.pos + n)
        out = bytes(self.buf[self.pos : end])
        self.pos = end
        return out


def _header(buf: memoryview, pos: int, size: int) -> int:
    if pos + 1 + size > len(buf):
        raise ValueError("msgpack data ends inside a header")
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "big")


def _map_header(buf: memoryview, pos: int) -> tuple[int, int] | None:
    """(entries, position after the header) when a map starts at ``pos``, else None."""
    t = buf[pos]
    if 0x80 <= t <= 0x8F:
        return t & 0x0F, pos + 1
    if t in (0xDE, 0xDF):
        size = 2 if t == 0xDE else 4
        return _header(buf, pos, size), pos + 1 + size
    return None


def _bin_header(buf: memoryview, pos: int) -> tuple[int, int] | None:
    """(length, start of the bytes) when a bin starts at ``pos``, else None."""
    size = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(buf[pos])
    if size is None:
        return None
    n, start = _header(buf, pos, size), pos + 1 + size
    if start + n > len(buf):
        raise ValueError("msgpack data ends inside a binary value")
    return n, start


def unpack_views(
    data: Any,
    object_hook: Callable[[dict[Any, Any]], Any] | None = None,
    min_view: int = _VIEW_BYTES,
    max_depth: int = 32,
) -> Any:
    """Decode msgpack like ``msgpack.unpackb(data, raw=False)``, but every binary value of at least
    ``min_view`` bytes inside maps comes back as a memoryview of ``data`` (no copy; writable when ``data``
    is). Maps are walked here; any other value (lists, strings, numbers, small bins) is decoded by msgpack.
    Raises ValueError (or msgpack's own errors) on malformed data, including trailing bytes.
    """
    buf = memoryview(data).cast("B")

    def value(pos: int, depth: int) -> tuple[Any, int]:
        if pos >= len(buf):
            raise ValueError("msgpack data ends early")
        head = _map_header(buf, pos)
        if head is not None:
            if depth >= max_depth:
                raise ValueError(f"msgpack maps nested deeper than {max_depth}")
            count, pos = head
            if count > len(buf) - pos:
                raise ValueError("msgpack map longer than the data")
            out: dict[Any, Any] = {}
            for _ in range(count):
                key, pos = value(pos, depth + 1)
                if not isinstance(key, (str, bytes)):
                    raise ValueError(f"msgpack map keys must be strings; got {type(key).__name__}")
                out[key], pos = value(pos, depth + 1)
            return (object_hook(out) if object_hook else out), pos
        binary = _bin_header(buf, pos)
        if binary is not None and binary[0] >= min_view:
            n, start = binary
            return buf[start : start + n], start + n
        unpacker = msgpack.Unpacker(
            _SliceReader(buf, pos), raw=False, object_hook=object_hook, read_size=4096,
            max_buffer_size=max(len(buf), 4096),
        )
        obj = unpacker.unpack()
        return obj, pos + unpacker.tell()

    obj, end = value(0, 0)
    if end != len(buf):
        raise ValueError(f"{len(buf) - end} bytes of extra data after the msgpack value")
    return obj
