"""Schemathesis hooks for the fuzz run: send and read msgpack bodies as the service does.

Loaded by the ``st`` command through ``SCHEMATHESIS_HOOKS=st_hooks`` (this folder on PYTHONPATH).
"""

from __future__ import annotations

from typing import Any

import msgpack
import schemathesis


def _plain(value: Any) -> Any:
    """Generated values as msgpack-able Python objects (raw bytes kept; integers past 64 bits as floats)."""
    data = getattr(value, "data", None)
    if isinstance(data, bytes) and not isinstance(value, (dict, list)):
        return data
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    return value


@schemathesis.serializer("application/msgpack")
def serialize_msgpack(ctx: Any, value: Any) -> bytes:
    """A generated body as msgpack bytes (arrays travel as nested lists, which the service accepts)."""
    return msgpack.packb(_plain(value), use_bin_type=True)


@schemathesis.deserializer("application/msgpack")
def deserialize_msgpack(ctx: Any, response: Any) -> Any:
    """A msgpack answer, for response-schema checks."""
    return msgpack.unpackb(response.content, raw=False)
