"""The storage contract every back end (zarr, HDF5) implements, local or remote.

A dataset is a group at a URL holding validated metadata (:class:`DatasetMeta`) and one array per
variable, indexed ``[t, z, y, x, component]``, stored as inner chunks inside shards, the inner chunks of a
shard in Morton order. Back ends only move whole, in-bounds boxes of grid values; periodic wrapping,
caching and halo assembly live in :mod:`labservice.storage.reader`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from labservice.storage.metadata import DatasetMeta

if TYPE_CHECKING:
    import zarr.abc.store


class FieldStore(ABC):
    """One dataset on one back end.

    Implementations declare what they can do with class attributes, like zarr's stores do, and set
    every instance member below in ``__init__``: callers read them directly, never probe for them.
    """

    backend: ClassVar[str]
    supports_writes: ClassVar[bool] = True

    url: str
    meta: DatasetMeta
    # The fsspec options the store was opened with, so another process (a job worker) can reopen it.
    storage_options: dict[str, Any] | None
    # Identifies the current contents; readers key their chunk caches on it, back ends renew it on write.
    cache_token: str

    @property
    def zarr_store(self) -> zarr.abc.store.Store | None:
        """The underlying zarr store for byte-level reads (the HTTP zarr view); None when not zarr."""
        return None

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def create(
        cls, url: str, meta: DatasetMeta, storage_options: dict[str, Any] | None = None, overwrite: bool = False
    ) -> FieldStore:
        """Create the group and one empty array per variable; write the metadata."""

    @classmethod
    @abstractmethod
    def open(cls, url: str, storage_options: dict[str, Any] | None = None, mode: str = "r") -> FieldStore:
        """Open an existing dataset. ``mode`` is ``"r"`` or ``"r+"``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    # -- data --------------------------------------------------------------------------------------
    @abstractmethod
    def read_box(self, variable: str, t: int, z: slice, y: slice, x: slice) -> np.ndarray:
        """Return the in-bounds box ``[t, z, y, x, :]`` as an array of shape (nz, ny, nx, ncomp).

        Slices have step 1 and lie inside the grid. Raises ``CorruptData`` when a checksum fails and
        ``StorageUnavailable`` when the store cannot be reached.
        """

    @abstractmethod
    def read_chunks(
        self, variable: str, t: int, coords: list[tuple[int, int, int]]
    ) -> tuple[list[np.ndarray], int]:
        """The inner chunks at chunk indices ``coords`` (cz, cy, cx) of time step t, in one batch.

        Returns the arrays (nz, ny, nx, ncomp), in the order of ``coords`` and clipped at the grid's
        upper edges, and the stored bytes fetched (including shard indexes).
        """

    @abstractmethod
    def write_box(self, variable: str, t: int, z0: int, y0: int, x0: int, data: np.ndarray) -> None:
        """Write ``data`` (nz, ny, nx, ncomp) with its corner at (z0, y0, x0)."""

    @abstractmethod
    def shard_done(self, variable: str, t: int, shard: tuple[int, int, int]) -> bool:
        """Whether the shard with index (sz, sy, sx) of time step t was completely written (resumable ingest)."""

    @abstractmethod
    def mark_shard_done(self, variable: str, t: int, shard: tuple[int, int, int]) -> None:
        """Record that a shard is complete, after its data is durable."""

    @abstractmethod
    def update_meta(self, meta: DatasetMeta) -> None:
        """Replace the stored metadata (for example to add provenance after ingest)."""
