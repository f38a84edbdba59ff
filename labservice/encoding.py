"""Request and response bodies: JSON or msgpack, never pickle.

Requests are decoded by their Content-Type, responses encoded by the Accept header. In msgpack an array
travels as ``{"dtype": "float64", "shape": [n, 3], "data": <raw little-endian bytes>}``; in JSON as plain
nested lists (non-finite numbers become ``null``). The body size limit is enforced while the bytes
arrive, before anything is parsed.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgpack
import numpy as np
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from labservice.errors import InvalidInput, LimitExceeded

MSGPACK = "application/msgpack"
JSON = "application/json"
_MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
# Arrays a client may send: plain numbers only, so nothing can smuggle objects in.
_ARRAY_DTYPES = {
    "float32",
    "float64",
    "int32",
    "int64",
    "uint32",
    "uint64",
    "int8",
    "uint8",
    "int16",
    "uint16",
}
_MAX_DIMS = 8
# Bodies and answers smaller than this are encoded on the event loop; bigger ones in a worker thread,
# so that one large JSON request does not stall everybody else's small ones.
_INLINE_BYTES = 256 << 10
_VIEW_BYTES = 64 << 10  # arrays from this size go out as views of their own memory, not copies
_MAX_MAP_DEPTH = 32  # maps nested deeper in a big msgpack body are refused

M = TypeVar("M", bound=BaseModel)


# -- content negotiation ---------------------------------------------------------------------------
def is_msgpack(content_type: str | None) -> bool:
    """Whether a Content-Type or Accept value names msgpack."""
    return bool(content_type) and any(t in content_type for t in _MSGPACK_TYPES)  # type: ignore[operator]


def wants_msgpack(request: Request) -> bool:
    return is_msgpack(request.headers.get("accept"))


# -- requests --------------------------------------------------------------------------------------
async def read_body(request: Request, max_bytes: int) -> bytes | memoryview:
    """Read the raw body, refusing (413) anything over ``max_bytes`` before it is all in memory."""
    declared = request.headers.get("content-length")
    too_big = LimitExceeded(
        f"the request body is over the limit of {max_bytes} bytes; send fewer points per request "
        "(the Python client splits large requests for you)"
    )
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    msgpack_body = is_msgpack(request.headers.get("content-type"))
    if msgpack_body and declared is not None and declared.isdigit() and int(declared) >= _INLINE_BYTES:
        return await _read_into_buffer(request, int(declared))  # json.loads takes no buffer: bytes below
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > max_bytes:
            raise too_big
        parts.append(part)
    return b"".join(parts)


async def _read_into_buffer(request: Request, size: int) -> memoryview:
    """Read a body of known size into one numpy buffer (numpy asks the kernel for huge pages; joining
    bytes objects costs a page fault per 4 kB, ~17 ms for 24 MB on this kind of VM)."""
    buf = np.empty(size, dtype=np.uint8)
    pos = 0
    async for part in request.stream():
        if pos + len(part) > size:
            raise InvalidInput(f"the request body is longer than its Content-Length of {size} bytes")
        buf[pos : pos + len(part)] = np.frombuffer(part, dtype=np.uint8)
        pos += len(part)
    if pos != size:
        raise InvalidInput(f"the request body ended after {pos} of its {size} bytes (Content-Length)")
    return memoryview(buf)


def _array_from_msgpack(obj: dict[str, Any]) -> np.ndarray:
    dtype_name, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if not isinstance(dtype_name, str):
        raise InvalidInput(f"an array's dtype must be a string such as 'float64'; got {dtype_name!r}")
    try:
        dtype = np.dtype(dtype_name)
    except TypeError:
        raise InvalidInput(f"unknown array dtype {dtype_name!r}; use float64 or float32") from None
    if dtype.name not in _ARRAY_DTYPES or dtype.byteorder == ">":
        raise InvalidInput(
            f"array dtype {dtype_name!r} is not accepted; use little-endian float64 or float32"
        )
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) > _MAX_DIMS
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise InvalidInput(f"an array's shape must be a list of non-negative integers; got {shape!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput("an array's data must be msgpack binary (raw little-endian bytes)")
    expected = math.prod(shape) * dtype.itemsize
    if memoryview(data).nbytes != expected:
        raise InvalidInput(
            f"an array of shape {list(shape)} and dtype {dtype.name} needs {expected} bytes of data; "
            f"got {memoryview(data).nbytes}"
        )
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape)


# -- zero-copy decoding of big bodies (the same walker as labclient.codec: two distributions) -------
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
    max_depth: int = _MAX_MAP_DEPTH,
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


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 3 and set(obj) == {"dtype", "shape", "data"}:
        return _array_from_msgpack(obj)
    return obj


def decode_body(raw: bytes | memoryview, content_type: str | None) -> dict[str, Any]:
    """Parse a JSON or msgpack body into a dict (msgpack arrays become numpy arrays)."""
    if not raw:
        raise InvalidInput("the request body is empty; send a JSON or msgpack object")
    if is_msgpack(content_type):
        try:
            if isinstance(raw, memoryview):  # a big body read into one buffer: arrays as views of it
                body = unpack_views(raw, object_hook=_object_hook)
            else:
                body = msgpack.unpackb(raw, object_hook=_object_hook, raw=False, strict_map_key=True)
        except InvalidInput:
            raise
        except Exception as exc:  # msgpack raises several unrelated classes for bad bytes
            raise InvalidInput(f"the body is not valid msgpack ({type(exc).__name__}: {exc})") from None
    elif content_type is None or "json" in content_type:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # bad bytes, bad syntax, absurd nesting or digits
            raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    else:
        raise InvalidInput(
            f"unsupported Content-Type {content_type!r}; send application/json or application/msgpack"
        )
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be an object (a map of parameters); got {type(body).__name__}")
    return body


def format_validation_errors(errors: list[dict[str, Any]]) -> str:
    """Turn pydantic's error list into one readable sentence per problem."""
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)


def parse_model(model: type[M], body: dict[str, Any]) -> M:
    """Validate a decoded body against a request model; errors become one InvalidInput (422)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        allowed = ", ".join(model.model_fields)
        for err in errors:
            if err.get("type") == "extra_forbidden" and len(err.get("loc", ())) == 1:
                err["msg"] = f"is not a parameter of this request; the parameters are: {allowed}"
        raise InvalidInput(format_validation_errors(errors)) from None


async def parse_request(request: Request, model: type[M], max_bytes: int) -> M:
    """Read, decode and validate a request body; big bodies are parsed off the event loop."""
    raw = await read_body(request, max_bytes)
    content_type = request.headers.get("content-type")
    if len(raw) < _INLINE_BYTES:
        return parse_model(model, decode_body(raw, content_type))
    return await run_in_threadpool(lambda: parse_model(model, decode_body(raw, content_type)))


# -- responses -------------------------------------------------------------------------------------
def _walk(obj: Any, array: Any, scalar: Any) -> Any:
    """Rebuild a payload tree, turning arrays with ``array`` and plain (or numpy) scalars with ``scalar``."""
    if isinstance(obj, np.ndarray):
        return array(obj)
    if isinstance(obj, dict):
        return {k: _walk(v, array, scalar) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(v, array, scalar) for v in obj]
    return scalar(obj.item() if isinstance(obj, np.generic) else obj)


def _msgpack_array(obj: np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(obj)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": memoryview(arr).cast("B")}


def _json_array(obj: np.ndarray) -> Any:
    if obj.dtype.kind == "f" and not np.isfinite(obj).all():
        return np.where(np.isfinite(obj), obj, None).tolist()
    return obj.tolist()


def _json_scalar(obj: Any) -> Any:
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _to_msgpack_tree(obj: Any) -> Any:
    return _walk(obj, _msgpack_array, lambda v: v)


def _to_json_tree(obj: Any) -> Any:
    return _walk(obj, _json_array, _json_scalar)


def pack_pieces(payload: dict[str, Any]) -> list[bytes | memoryview]:
    """msgpack of ``payload`` (arrays as {dtype, shape, data}) as consecutive pieces whose concatenation is
    exactly ``msgpack.packb``'s output; each big array's data is a piece of its own, a view, not a copy
    (msgpack copies a bin into a growing buffer: ~40 ms for 24 MB, twice what one plain copy costs)."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    pieces: list[bytes | memoryview] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            packer.pack_map_header(len(obj))
            for key, value in obj.items():
                packer.pack(key)
                walk(value)
        elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
            packer.pack_array_header(len(obj))
            for value in obj:
                walk(value)
        elif isinstance(obj, memoryview) and obj.nbytes >= _VIEW_BYTES:
            # bin 32 header, then the bytes themselves
            pieces.append(packer.bytes() + b"\xc6" + obj.nbytes.to_bytes(4, "big"))
            packer.reset()
            pieces.append(obj)
        else:
            packer.pack(obj)

    walk(_to_msgpack_tree(payload))
    pieces.append(packer.bytes())
    return pieces


def pack(payload: dict[str, Any]) -> bytes:
    """Encode a payload as msgpack with arrays as {dtype, shape, data}."""
    return b"".join(pack_pieces(payload))


class PiecesResponse(Response):
    """A response whose body is sent as the given pieces, in order, without joining them."""

    def __init__(self, pieces: list[bytes | memoryview], status_code: int = 200, media_type: str = MSGPACK):
        super().__init__(b"", status_code=status_code, media_type=media_type)
        self.pieces = pieces
        self.headers["content-length"] = str(sum(memoryview(p).nbytes for p in pieces))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        pieces = [] if scope.get("method") == "HEAD" else [p for p in self.pieces if len(p)]
        for i, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i < len(pieces) - 1})
        if not pieces:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class StreamedResponse(Response):
    """A body sent as ``first`` and then each piece of ``rest``, pulled in a worker thread and sent as it is
    (bytes or a memoryview: never joined or copied). With ``length`` it carries a Content-Length, so the
    server writes each piece straight to the socket (chunked encoding would copy every piece to frame it).
    ``close`` runs once the body is sent or the send failed (it ends the iterator, removes temporary files).
    """

    def __init__(
        self,
        first: bytes | memoryview,
        rest: Iterator[bytes | memoryview],
        length: int | None,
        media_type: str,
        headers: dict[str, str] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(b"", media_type=media_type, headers=headers)
        del self.headers["content-length"]
        if length is not None:
            self.headers["content-length"] = str(length)
        self.first, self.rest, self.close = first, rest, close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # uvicorn drops what is sent after the client left: stop reading then, instead of reading on.
        left = asyncio.ensure_future(_disconnected(receive))
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            piece: bytes | memoryview | None = None if scope.get("method") == "HEAD" else self.first
            while piece is not None and not left.done():
                if memoryview(piece).nbytes:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                piece = await run_in_threadpool(next, self.rest, None)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            left.cancel()
            self.first = b""
            if self.close is not None:
                await run_in_threadpool(self.close)


async def _disconnected(receive: Any) -> None:
    """Return when the client has gone (or the response is complete, which uvicorn reports alike)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def encode(payload: dict[str, Any], msgpack_wanted: bool, status_code: int = 200) -> Response:
    """A msgpack or JSON response holding ``payload``."""
    if msgpack_wanted:
        pieces = pack_pieces(payload)
        if len(pieces) == 1:
            return Response(pieces[0], status_code=status_code, media_type=MSGPACK)
        return PiecesResponse(pieces, status_code=status_code)
    body = json.dumps(_to_json_tree(payload), separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status_code=status_code, media_type=JSON)


async def respond(request: Request, payload: dict[str, Any]) -> Response:
    """Encode ``payload`` the way the request's Accept header asks; big payloads off the event loop."""
    size = sum(v.nbytes for v in payload.values() if isinstance(v, np.ndarray))
    if size < _INLINE_BYTES:
        return encode(payload, wants_msgpack(request))
    return await run_in_threadpool(encode, payload, wants_msgpack(request))


# -- OpenAPI ---------------------------------------------------------------------------------------
def openapi_body(model: type[BaseModel], examples: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body read by :func:`parse_request` (JSON or msgpack)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    named = {k: {"summary": k, "value": v} for k, v in examples.items()}
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": schema, "examples": named},
                MSGPACK: {
                    "schema": schema,
                    "description": "The same object in msgpack; arrays may be {dtype, shape, data: bytes}.",
                },
            },
        },
        "x-schema-defs": defs,
    }
