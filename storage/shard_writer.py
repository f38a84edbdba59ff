"""Whole-shard writes for the zarr back end, byte for byte what zarr's sharding codec writes, at memory speed.

zarr-python encodes a shard chunk by chunk through its async codec pipeline (about 1 s per 200 MB shard
here). An ingest always writes whole shards, so this module builds the shard itself:

- a nogil numba pass gathers the inner chunks from the source arrays (any strides, any numeric dtype,
  several component arrays interleaved) in the sharding codec's Morton order, casting to the stored
  dtype and padding the grid's edge with the fill value (NaN), a cache-sized batch of chunks at a time;
- crc32c of each chunk while it is still in the cache (the ``crc32c`` package, hardware, releases the
  GIL), and at the end the shard index with its own crc32c;
- ``writev`` of each batch (chunk, checksum, chunk, ...) into a temporary file renamed into place at the
  end, so a reader sees the old shard or the new one; a remote store gets the whole shard in one ``set``.

Chunks entirely NaN are left out of the shard and the shard index says so, and a shard of only such
chunks is deleted, as zarr does with ``write_empty_chunks=False``. ``tests/ingest/test_shard_writer.py``
checks the bytes against zarr's own writes. Only the layout ``ZarrStore.create`` makes without
compression (bytes + crc32c inner codecs, index at the end) qualifies; anything else goes through zarr.
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import crc32c
import numba
import numpy as np

from labservice.errors import InvalidInput
from labservice.storage._common import EMPTY_CHUNK

_IOV_MAX = 1000  # buffers per writev call (Linux allows 1024)
BATCH_BYTES = 4 << 20  # chunks gathered, checksummed and written at a time: about the size of a cache

__all__ = ["check_box", "encode_shard", "morton_chunks", "release_buffer", "shard_pieces", "write_local"]


@functools.lru_cache(maxsize=64)
def morton_chunks(per: tuple[int, int, int]) -> np.ndarray:
    """(n, 3) chunk coordinates (z, y, x) of a shard in the order zarr's sharding codec stores them."""
    from zarr.core.indexing import morton_order_iter

    order = [c[1:4] for c in morton_order_iter((1, *per, 1))]
    return np.asarray(order, dtype=np.int64).reshape(-1, 3)


@numba.njit(nogil=True, cache=True)
def _gather(a0, a1, a2, a3, ncomp, c0, out, order, cz, cy, cx, nan):  # noqa: ANN001 - numba specialises
    """Copy components c0 .. c0+ncomp of the box (arrays z, y, x) into out[k] (chunk k of ``order``,
    C order z, y, x, component), NaN beyond the box; return per chunk whether it holds any non-NaN."""
    nz, ny, nx = a0.shape
    nc = out.shape[1] // (cz * cy * cx)  # all components of the variable; this call fills ncomp of them
    has_value = np.zeros(order.shape[0], dtype=np.bool_)
    for k in range(order.shape[0]):
        z0 = order[k, 0] * cz
        y0 = order[k, 1] * cy
        x0 = order[k, 2] * cx
        row = out[k]
        seen = False
        for lz in range(cz):
            for ly in range(cy):
                z = z0 + lz
                y = y0 + ly
                base = (lz * cy + ly) * cx * nc + c0
                n = min(cx, nx - x0) if z < nz and y < ny else 0
                # One branch per component count, outside the hot loop, so each loop is a plain copy.
                if ncomp == 3:
                    for lx in range(n):
                        v0 = a0[z, y, x0 + lx]
                        v1 = a1[z, y, x0 + lx]
                        v2 = a2[z, y, x0 + lx]
                        j = base + lx * nc
                        row[j] = v0
                        row[j + 1] = v1
                        row[j + 2] = v2
                        seen |= (v0 == v0) | (v1 == v1) | (v2 == v2)
                elif ncomp == 1:
                    for lx in range(n):
                        v0 = a0[z, y, x0 + lx]
                        row[base + lx * nc] = v0
                        seen |= v0 == v0
                else:
                    for lx in range(n):
                        j = base + lx * nc
                        for c in range(ncomp):
                            src = a0 if c == 0 else (a1 if c == 1 else (a2 if c == 2 else a3))
                            v = src[z, y, x0 + lx]
                            row[j + c] = v
                            seen |= v == v
                for lx in range(n, cx):
                    for c in range(ncomp):
                        row[base + lx * nc + c] = nan
        has_value[k] = seen
    return has_value


_local = threading.local()


def _thread_buffer(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """One shard buffer per thread, reused: a fresh 200 MB array costs as much in page faults as the gather."""
    buf = getattr(_local, "buffer", None)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = _local.buffer = None  # free the old one first
        buf = _local.buffer = np.empty(shape, dtype=dtype)
    return buf


def release_buffer() -> None:
    """Free this thread's shard buffer (a long-lived thread calls it after its last shard)."""
    _local.buffer = None


def check_box(variable: str, components: list[np.ndarray], ncomp: int, box: tuple[int, ...]) -> None:
    """Every component is one numeric array of the shard's box (nz, ny, nx), clipped to the grid."""
    if len(components) != ncomp:
        raise InvalidInput(f"{variable!r} has {ncomp} components; got {len(components)} arrays")
    for a in components:
        if a.shape != box or a.dtype.kind not in "fiu" or a.dtype != components[0].dtype:
            raise InvalidInput(
                f"each component of a shard of {variable!r} must be a numeric array of shape {box}, all of "
                f"one dtype; got {a.shape} {a.dtype}"
            )


def shard_pieces(
    components: list[np.ndarray],
    dtype: np.dtype,
    chunk: tuple[int, int, int],
    per: tuple[int, int, int],
) -> Iterator[list[Any]]:
    """The buffers of one shard in file order, a batch of chunks at a time, then the index; nothing at all
    when every chunk is NaN. Each batch's buffers are views of a per-thread buffer, valid until the next one.

    Parameters
    ----------
    components : list of arrays (nz, ny, nx)
        One array per component, in component order, all the same shape (the shard's box clipped to the
        grid) and dtype; any strides (views of memory maps or of a transposed source are fine).
    dtype : numpy dtype
        The stored dtype (little-endian float32 or float64).
    chunk : (cz, cy, cx)
        The inner chunk shape.
    per : (nz, ny, nx)
        Chunks per shard along each axis.

    Chunks are gathered ``BATCH_BYTES`` at a time: a batch that fits in the CPU cache is checksummed and
    written from the cache rather than from memory, and a thread holds one batch, not one shard.
    """
    order = morton_chunks(per)
    ncomp = len(components)
    kinds = {(a.flags.c_contiguous, a.flags.writeable) for a in components}
    if len(kinds) > 1:  # the kernel takes its arrays as one numba type: make them alike
        components = [np.array(a, order="C") for a in components]
    words = chunk[0] * chunk[1] * chunk[2] * ncomp
    batch = max(1, BATCH_BYTES // (words * dtype.itemsize))
    buffer = _thread_buffer((min(batch, order.shape[0]), words), dtype)
    nan = buffer.dtype.type(np.nan)
    index = np.full((*per, 2), EMPTY_CHUNK, dtype="<u8")
    offset = 0
    for b0 in range(0, order.shape[0], batch):
        part = order[b0 : b0 + batch]
        data = buffer[: part.shape[0]]
        has_value = np.zeros(part.shape[0], dtype=bool)
        for c0 in range(0, ncomp, 4):  # the kernel takes up to four component arrays per call
            group = components[c0 : c0 + 4]
            group = group + [group[0]] * (4 - len(group))
            has_value |= _gather(*group, min(4, ncomp - c0), c0, data, part, *chunk, nan)
        pieces: list[Any] = []
        for k in np.flatnonzero(has_value):
            body = data[k]
            pieces += [body, crc32c.crc32c(body).to_bytes(4, "little")]
            index[tuple(part[k])] = (offset, body.nbytes + 4)
            offset += body.nbytes + 4
        yield pieces
    if offset:
        raw = index.tobytes()
        yield [raw, crc32c.crc32c(raw).to_bytes(4, "little")]


def encode_shard(
    components: list[np.ndarray], dtype: np.dtype, chunk: tuple[int, int, int], per: tuple[int, int, int]
) -> bytes | None:
    """The whole shard as one object (for object stores, which take one PUT); None when every chunk is NaN.
    Arguments as :func:`shard_pieces`."""
    out = bytearray()
    for pieces in shard_pieces(components, dtype, chunk, per):
        for piece in pieces:
            out += memoryview(piece).cast("B")
    return bytes(out) if out else None


def write_local(path: str, pieces: Iterator[list[Any]]) -> None:
    """Write a shard's pieces (:func:`shard_pieces`) to ``path`` through a temporary file and a rename, so
    no reader sees a partial shard; no pieces at all removes the shard (every chunk was NaN)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    try:
        for batch in pieces:
            views = [memoryview(b).cast("B") for b in batch]
            written += sum(v.nbytes for v in views)
            first = 0
            while first < len(views):
                done = os.writev(fd, views[first : first + _IOV_MAX])
                while first < len(views) and done >= views[first].nbytes:  # skip what was written
                    done -= views[first].nbytes
                    first += 1
                if done:  # a short write inside one buffer: keep its rest
                    views[first] = views[first][done:]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    if written:
        os.replace(tmp, path)
    else:
        os.unlink(tmp)
        if os.path.exists(path):
            os.unlink(path)
