"""Particles stored in Morton order with a key-offset index, and sphere/box cutouts that read only what they touch.

Layout of one snapshot folder::

    index.json      box, level (2**level cells per side), particle count, fields
    offsets.npy     int64 (ncell + 1): particles of cell key k are rows offsets[k]:offsets[k+1]
    Coordinates.npy float32 (N, 3)   Velocities.npy float32 (N, 3)   ParticleIDs.npy (N,)

Rows are sorted by the Morton key of their cell, so a query turns into a few contiguous key ranges. The
arrays are memory-mapped: only the pages of the touched ranges are read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from labservice.errors import InvalidInput, NotFound, unknown
from labservice.storage.morton import encode3

FIELDS = ("Coordinates", "Velocities", "ParticleIDs")


def choose_level(n_particles: int, per_cell: float = 8.0) -> int:
    """Index level giving about ``per_cell`` particles per cell (between 1 and 10)."""
    cells_per_side = (n_particles / per_cell) ** (1.0 / 3.0)
    return int(np.clip(np.round(np.log2(max(cells_per_side, 2.0))), 1, 10))


def cell_keys(pos: np.ndarray, box: float, level: int) -> np.ndarray:
    """Morton key of the index cell holding each position."""
    n = 1 << level
    cell = np.floor(np.asarray(pos, dtype=np.float64) * (n / box)).astype(np.int64) % n
    return encode3(cell[:, 0], cell[:, 1], cell[:, 2]).astype(np.int64)


def write_particles(
    path: str | Path, pos: np.ndarray, vel: np.ndarray, ids: np.ndarray, box: float, level: int | None = None
) -> Path:
    """Sort particles by cell Morton key and write them with the key-offset index."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Keys come from the stored float32 values, wrapped into [0, box) after rounding, so cells stay exact.
    p32 = np.mod(np.asarray(pos, dtype=np.float64), box).astype(np.float32)
    p32[p32 >= np.float32(box)] = 0.0
    level = choose_level(p32.shape[0]) if level is None else level
    keys = cell_keys(p32, box, level)
    order = np.argsort(keys, kind="stable")
    offsets = np.searchsorted(keys[order], np.arange((1 << level) ** 3 + 1)).astype(np.int64)
    p32 = p32[order]
    np.save(path / "offsets.npy", offsets)
    np.save(path / "Coordinates.npy", p32)
    np.save(path / "Velocities.npy", np.asarray(vel, dtype=np.float32)[order])
    np.save(path / "ParticleIDs.npy", np.asarray(ids)[order])
    meta = {"box": float(box), "level": int(level), "count": int(p32.shape[0]), "fields": list(FIELDS)}
    (path / "index.json").write_text(json.dumps(meta))
    return path


def cell_ranges(lo: np.ndarray, hi: np.ndarray, box: float, level: int, centre=None, radius=None) -> np.ndarray:
    """Merged Morton key ranges [k0, k1) of the cells overlapping the periodic box [lo, hi) (or the sphere).

    ``lo`` may be negative and ``hi`` beyond ``box``: the cells wrap. With ``centre`` and ``radius``, cells whose
    nearest point is farther than ``radius`` from the centre are dropped.
    """
    n = 1 << level
    width = box / n
    axes = []
    for d in range(3):
        i0, i1 = int(np.floor(lo[d] / width)), int(np.floor(hi[d] / width))
        idx = np.arange(i0, i1 + 1)
        axes.append(np.unique(idx % n) if idx.size >= n else idx)
    ix, iy, iz = np.meshgrid(*axes, indexing="ij")
    cells = np.stack([ix.ravel(), iy.ravel(), iz.ravel()], axis=1)
    if centre is not None:
        # Distance from the centre to the nearest point of each cell, over the cell's periodic images.
        c = np.asarray(centre, dtype=np.float64)
        gap = np.full(cells.shape, np.inf)
        for shift in (-box, 0.0, box):
            near = np.clip(c, cells * width + shift, (cells + 1) * width + shift)
            gap = np.minimum(gap, np.abs(near - c))
        cells = cells[(gap**2).sum(axis=1) <= radius * radius]
    cells %= n
    keys = np.unique(encode3(cells[:, 0], cells[:, 1], cells[:, 2]).astype(np.int64))
    if keys.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    breaks = np.flatnonzero(np.diff(keys) != 1) + 1
    starts = keys[np.concatenate([[0], breaks])]
    ends = keys[np.concatenate([breaks - 1, [keys.size - 1]])] + 1
    return np.stack([starts, ends], axis=1)


class ParticleSnapshot:
    """One Morton-ordered particle snapshot, memory-mapped; sphere and box cutouts.

    Parameters
    ----------
    path : str or Path
        Folder written by :func:`write_particles`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            meta = json.loads((self.path / "index.json").read_text())
        except FileNotFoundError:
            raise NotFound(f"no particle snapshot at {self.path}") from None
        self.box = float(meta["box"])
        self.level = int(meta["level"])
        self.count = int(meta["count"])
        self.offsets = np.load(self.path / "offsets.npy")
        self._arrays = {f: np.load(self.path / f"{f}.npy", mmap_mode="r") for f in FIELDS}
        self.bytes_read = 0

    def _fields(self, fields) -> list[str]:
        fields = list(FIELDS if fields is None else fields)
        for f in fields:
            if f not in FIELDS:
                raise unknown("particle field", f, FIELDS, InvalidInput)
        return fields

    def _read_ranges(self, ranges: np.ndarray, fields: list[str]) -> dict[str, np.ndarray]:
        rows = [(int(self.offsets[a]), int(self.offsets[b])) for a, b in ranges]
        rows = [(a, b) for a, b in rows if b > a]
        out = {}
        for f in set(fields) | {"Coordinates"}:
            arr = self._arrays[f]
            parts = [np.asarray(arr[a:b]) for a, b in rows]
            out[f] = np.concatenate(parts) if parts else np.zeros((0,) + arr.shape[1:], dtype=arr.dtype)
            self.bytes_read += out[f].nbytes
        return out

    def sphere(self, centre, radius: float, fields=None) -> dict[str, np.ndarray]:
        """Particles within ``radius`` (periodic) of ``centre``; adds ``Offsets``: the displacement from centre."""
        c = np.mod(np.asarray(centre, dtype=np.float64).reshape(3), self.box)
        if not np.isfinite(radius) or radius <= 0 or radius > self.box / 2:
            raise InvalidInput(f"radius must be in (0, {self.box / 2}] (half the box); got {radius}")
        fields = self._fields(fields)
        ranges = cell_ranges(c - radius, c + radius, self.box, self.level, centre=c, radius=radius)
        data = self._read_ranges(ranges, fields)
        delta = (data["Coordinates"] - c + 0.5 * self.box) % self.box - 0.5 * self.box
        keep = (delta.astype(np.float64) ** 2).sum(axis=1) <= radius * radius
        out = {f: data[f][keep] for f in fields}
        out["Offsets"] = delta[keep].astype(np.float32)
        return out

    def box_query(self, lo, hi, fields=None) -> dict[str, np.ndarray]:
        """Particles with lo <= x < hi on every axis; the box may extend past the edges (it wraps)."""
        lo = np.asarray(lo, dtype=np.float64).reshape(3)
        hi = np.asarray(hi, dtype=np.float64).reshape(3)
        if np.any(hi <= lo) or np.any(hi - lo > self.box):
            raise InvalidInput(f"need lo < hi and hi - lo <= box ({self.box}) on every axis; got lo={lo}, hi={hi}")
        fields = self._fields(fields)
        data = self._read_ranges(cell_ranges(lo, hi, self.box, self.level), fields)
        rel = (data["Coordinates"].astype(np.float64) - lo) % self.box
        keep = np.all(rel < hi - lo, axis=1)
        return {f: data[f][keep] for f in fields}

    def brute_sphere(self, centre, radius: float, fields=None) -> dict[str, np.ndarray]:
        """Reference: scan every particle (what a store without a spatial index has to do)."""
        c = np.asarray(centre, dtype=np.float64).reshape(3)
        fields = self._fields(fields)
        coords = np.asarray(self._arrays["Coordinates"])
        delta = (coords - c + 0.5 * self.box) % self.box - 0.5 * self.box
        keep = (delta.astype(np.float64) ** 2).sum(axis=1) <= radius * radius
        return {f: np.asarray(self._arrays[f])[keep] for f in fields}
