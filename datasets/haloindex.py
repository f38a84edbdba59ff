"""Morton index of halo centres, per snapshot: sphere and box searches touch only the rows they may match.

The halo table stays sorted by depth-first id (tree queries are id ranges). Beside it, this index keeps the
row numbers sorted by (snapshot, Morton key of the cell holding the halo centre) with a key-offset table,
exactly like the particle index (:mod:`labservice.storage.particles`): the halos of snapshot ``s`` in cell key
``k`` are ``order[offsets[s, k] : offsets[s, k + 1]]``. A ``near=`` or ``box=`` search turns into the few
merged key ranges of the cells it overlaps (periodic wrap included) and the caller then tests only those
candidate rows exactly, as Millennium's spatial index does with its Peano-Hilbert keys.

The index is rebuilt when a simulation opens (an argsort: about 10 ms for 10^5 halos), so catalogs written
before it existed need no migration.
"""

from __future__ import annotations

import numpy as np

from labservice.storage.particles import cell_keys, cell_ranges

__all__ = ["HaloIndex", "index_level"]


def index_level(max_per_snapshot: int, per_cell: float = 2.0) -> int:
    """Cells per side ``2**level`` giving about ``per_cell`` halos per cell in the fullest snapshot (1..7)."""
    cells_per_side = (max(max_per_snapshot, 1) / per_cell) ** (1.0 / 3.0)
    return int(np.clip(np.round(np.log2(max(cells_per_side, 2.0))), 1, 7))


class HaloIndex:
    """Row numbers of a halo table grouped by snapshot and sorted by the Morton key of the halo centre.

    Parameters
    ----------
    snap : ndarray (N,) of int
        Snapshot of every row (non-negative).
    centres : ndarray (N, 3)
        Halo centres in comoving Mpc/h; any real values (they are wrapped into the box).
    box : float
        Periodic box side.
    level : int, optional
        ``2**level`` cells per side; default from the fullest snapshot (:func:`index_level`).
    """

    def __init__(self, snap: np.ndarray, centres: np.ndarray, box: float, level: int | None = None) -> None:
        snap = np.asarray(snap, dtype=np.int64)
        centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
        self.box = float(box)
        self.n_snaps = int(snap.max()) + 1 if snap.size else 0
        counts = np.bincount(snap, minlength=self.n_snaps) if snap.size else np.zeros(0, np.int64)
        self.level = index_level(int(counts.max()) if counts.size else 0) if level is None else int(level)
        self.ncell = (1 << self.level) ** 3
        keys = cell_keys(centres, self.box, self.level) if snap.size else np.zeros(0, np.int64)
        composite = snap * self.ncell + keys
        # Stable: inside one cell rows stay in id order, so candidates come out nearly sorted.
        self.order = np.argsort(composite, kind="stable").astype(np.int64)
        edges = np.arange(self.n_snaps * self.ncell + 1, dtype=np.int64)
        self.offsets = np.searchsorted(composite[self.order], edges).reshape(-1)

    def _rows(self, snap: int, ranges: np.ndarray) -> np.ndarray:
        if not 0 <= snap < self.n_snaps:
            return np.zeros(0, dtype=np.int64)
        base = snap * self.ncell
        parts = [self.order[self.offsets[base + a] : self.offsets[base + b]] for a, b in ranges]
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.sort(rows)

    def sphere_rows(self, snap: int, centre: np.ndarray, radius: float) -> np.ndarray:
        """Candidate rows (ascending) of snapshot ``snap`` whose cells come within ``radius`` of ``centre``.

        A superset of the halos within ``radius`` (periodic); the caller measures the exact distances.
        """
        c = np.mod(np.asarray(centre, dtype=np.float64).reshape(3), self.box)
        r = float(radius)
        ranges = cell_ranges(c - r, c + r, self.box, self.level, centre=c, radius=r)
        return self._rows(int(snap), ranges)

    def box_rows(self, snap: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Candidate rows (ascending) of snapshot ``snap`` in the cells overlapping the periodic box [lo, hi)."""
        lo = np.asarray(lo, dtype=np.float64).reshape(3)
        hi = np.asarray(hi, dtype=np.float64).reshape(3)
        return self._rows(int(snap), cell_ranges(lo, hi, self.box, self.level))
