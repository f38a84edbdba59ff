"""Blocks of the grid that the point kernels read from: aligned cubes of chunks plus a stencil halo.

Every point belongs to the block holding its stencil's base node. A block's *padded box* adds ``HALO``
nodes on each side (clipped at non-periodic walls), enough for every method's stencil (at most 4 nodes
either side of the base node), so the kernel of a block reads one array and never crosses an edge.

How a block's array is obtained depends on how much of it the request needs:

- when the points' stencils span at least half of the padded box (dense requests, e.g. random points
  over the domain), the whole padded box is read once and kept in the reader's byte-bounded chunk cache,
  so later requests reuse it without copying anything;
- otherwise (sparse or clustered points) only the stencils' bounding box is read through the chunk
  cache, so a small cluster never pulls in a whole block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from labservice.storage.base import FieldStore
    from labservice.storage.metadata import DatasetMeta
    from labservice.storage.reader import ChunkCache

HALO = 4  # nodes beyond a block that any stencil may touch (fd8noint: 4 either side)
DENSE_FRACTION = 0.5  # read (and cache) the whole padded box when the stencils cover this much of it


class RegionSource(Protocol):
    """What the point engine reads from; :class:`labservice.storage.ChunkReader` satisfies it.

    ``cache`` keeps whole padded blocks, keyed on ``store.cache_token`` so a write invalidates them; a
    source that must not cache (a wrapper counting reads, say) sets ``cache = None``.
    """

    store: FieldStore
    cache: ChunkCache | None

    @property
    def meta(self) -> DatasetMeta: ...

    def region(self, variable: str, t: int, lo, hi) -> np.ndarray:
        """The box ``[lo, hi)`` (z, y, x; periodic axes wrap) of grid values, shape (nz, ny, nx, nc)."""
        ...


class BlockLayout:
    """The block decomposition of one variable's grid.

    Parameters
    ----------
    meta : DatasetMeta
    variable : str
    block : int
        Target block edge in nodes; rounded to whole chunks, and to the whole axis when larger.
    """

    def __init__(self, meta, variable: str, block: int) -> None:
        g = meta.grid
        axes = (g.x, g.y, g.z)
        cz, cy, cx = meta.array_chunks(variable)[1:4]
        self.variable = variable
        self.n = np.array([a.size for a in axes], dtype=np.int64)
        self.periodic = np.array([a.periodic for a in axes], dtype=bool)
        edge = []
        for n, c in zip(self.n, (cx, cy, cz), strict=True):
            b = c * max(1, round(block / c))
            edge.append(min(int(b), int(n)))
        self.edge = np.array(edge, dtype=np.int64)
        self.nblocks = -(-self.n // self.edge)
        self.count = int(np.prod(self.nblocks))
        self.edge_key = tuple(int(e) for e in self.edge)
        self._boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._tables: dict[int, np.ndarray] = {}

    def key_table(self, bits: int) -> np.ndarray:
        """(3, max n) int64: ``table[a, c]`` is node c's share along axis a of the sort key
        ``block_id << 3 * bits | morton(sub-cube)``, the sub-cube being one of ``2**bits`` per block edge.

        The shares occupy disjoint bits (block ids count x fastest), so a key is the sum of three
        lookups.
        """
        table = self._tables.get(bits)
        if table is None:
            table = np.zeros((3, int(self.n.max())), dtype=np.int64)
            stride = 1
            for a in range(3):
                edge = int(self.edge[a])
                shift = 0
                while (edge >> shift) > (1 << bits):
                    shift += 1
                c = np.arange(int(self.n[a]))
                inside = (c % edge) >> shift
                morton = np.zeros_like(c)
                for b in range(bits):
                    morton |= ((inside >> b) & 1) << (3 * b + a)
                table[a, : c.size] = ((c // edge) * stride << (3 * bits)) | morton
                stride *= int(self.nblocks[a])
            table.flags.writeable = False
            self._tables[bits] = table
        return table

    def sub_bits(self, npoints: int) -> int:
        """Bits per axis of the sub-cube sort key: fine enough to keep neighbours together, but with no
        more buckets than about twice the points (the counting sort costs one pass over its buckets)."""
        budget = max(4096, 2 * npoints, self.count)
        bits = 0
        while bits < 4 and self.count << (3 * (bits + 1)) <= budget and (1 << (bits + 1)) <= self.edge.max():
            bits += 1
        return bits

    def index(self, block_id: int) -> np.ndarray:
        """(bx, by, bz) of a linear block id (x fastest)."""
        bx = block_id % self.nblocks[0]
        rest = block_id // self.nblocks[0]
        return np.array([bx, rest % self.nblocks[1], rest // self.nblocks[1]], dtype=np.int64)

    def padded_box(self, block_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Node box ``[lo, hi)`` (x, y, z) of a block plus its halo, clipped to non-periodic walls."""
        box = self._boxes.get(block_id)
        if box is None:
            box = self._boxes[block_id] = self._padded_box(block_id)
        return box

    def _padded_box(self, block_id: int) -> tuple[np.ndarray, np.ndarray]:
        b = self.index(block_id)
        lo = b * self.edge - HALO
        hi = np.minimum((b + 1) * self.edge, self.n) + HALO
        lo = np.where(self.periodic, lo, np.maximum(lo, 0))
        hi = np.where(self.periodic, hi, np.minimum(hi, self.n))
        return lo, hi


def block_array(source: RegionSource, layout: BlockLayout, t: int, block_id: int, need) -> tuple[np.ndarray, np.ndarray]:
    """Values covering what one block's points need: ``(array, origin)``.

    ``array`` is a read-only C-contiguous (nz, ny, nx, nc) array, float32 when stored so (the kernels
    widen rows to float64 as they load them: half the memory traffic of float64 blocks, and faster
    for every method) and float64 otherwise, and ``origin`` the global node
    (x, y, z) of its first element. ``need()`` returns the node box ``(lo, hi)`` (x, y, z; hi exclusive)
    of the points' stencils; it is only called when the block is not cached already. Uses the cached
    padded box when there is one, or when the request is dense enough to be worth caching; otherwise
    reads just the needed box.
    """
    variable = layout.variable
    cache = source.cache
    lo, hi = layout.padded_box(block_id)
    key = None
    if cache is not None:
        key = (source.store.cache_token, "interpolation-block", variable, int(t), int(block_id),
               layout.edge_key, HALO)
        a = cache.get(key)
        if a is not None:
            return a, lo
    need_lo, need_hi = need()
    need_nodes = float(np.prod(need_hi - need_lo))
    if key is None or need_nodes < DENSE_FRACTION * float(np.prod(hi - lo)):
        region = _kernel_array(source.region(variable, t, (need_lo[2], need_lo[1], need_lo[0]),
                                        (need_hi[2], need_hi[1], need_hi[0])))
        return region, need_lo
    a = _kernel_array(source.region(variable, t, (lo[2], lo[1], lo[0]), (hi[2], hi[1], hi[0])))
    cache.put(key, a)
    return a, lo


def _kernel_array(a: np.ndarray) -> np.ndarray:
    # Two array types at most, both read-only like cached blocks: each distinct type is another compile.
    a = np.ascontiguousarray(a, dtype=np.float32 if a.dtype == np.float32 else np.float64)
    a.flags.writeable = False
    return a
