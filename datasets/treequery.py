"""Merger-tree queries by depth-first id ranges, and the pointer walk they replace.

With ids numbered depth-first (see :mod:`labservice.datasets.ingest.trees`) every query is one or two contiguous row
slices of the id-sorted halo table: progenitors ``[id, lastProgenitorId]``, main branch ``[id, mainLeafId]``,
full tree ``[treeRootId, root.lastProgenitorId]``. :func:`walk_main_branch` and :func:`walk_descendants` follow
one pointer per lookup, like a client of a REST API must; tests and the benchmark compare the two.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from labservice.errors import InvalidInput, NotFound

KINDS = ("progenitors", "main-branch", "descendants", "full")


class TreeTable:
    """Halo table sorted by depth-first ``id`` (consecutive from ``id[0]``), queried by row slices."""

    def __init__(self, halos: pd.DataFrame) -> None:
        ids = halos["id"].to_numpy()
        if ids.size and not np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
            raise InvalidInput("the halo table must be sorted by id with consecutive ids")
        self.halos = halos
        self.first = int(ids[0]) if ids.size else 0
        self._cols = {c: halos[c].to_numpy() for c in
                      ("descendantId", "lastProgenitorId", "mainLeafId", "treeRootId", "snap", "mass",
                       "firstProgenitorId", "nextProgenitorId")}

    def row(self, halo_id: int) -> int:
        r = int(halo_id) - self.first
        if not 0 <= r < len(self.halos):
            raise NotFound(f"no halo with id {halo_id}; ids run from {self.first} to {self.first + len(self.halos) - 1}")
        return r

    def _slice(self, r0: int, r1: int, snap: int | None) -> pd.DataFrame:
        out = self.halos.iloc[r0:r1]
        return out if snap is None else out[out["snap"].to_numpy() == snap]

    def progenitors(self, halo_id: int, snap: int | None = None) -> pd.DataFrame:
        """The halo and all its progenitors (optionally only those at ``snap``)."""
        r = self.row(halo_id)
        return self._slice(r, int(self._cols["lastProgenitorId"][r]) - self.first + 1, snap)

    def main_branch(self, halo_id: int, snap: int | None = None) -> pd.DataFrame:
        """The halo and its main progenitors back to the main leaf."""
        r = self.row(halo_id)
        return self._slice(r, int(self._cols["mainLeafId"][r]) - self.first + 1, snap)

    def full_tree(self, halo_id: int, snap: int | None = None) -> pd.DataFrame:
        """Every node of the halo's tree."""
        root = self.row(int(self._cols["treeRootId"][self.row(halo_id)]))
        return self._slice(root, int(self._cols["lastProgenitorId"][root]) - self.first + 1, snap)

    def descendants(self, halo_id: int, snap: int | None = None) -> pd.DataFrame:
        """The halo and its descendants to the tree root: the tree rows whose id range contains the halo."""
        r = self.row(halo_id)
        root = self.row(int(self._cols["treeRootId"][r]))
        hit = self._cols["lastProgenitorId"][root : r + 1] >= halo_id
        rows = np.flatnonzero(hit) + root
        out = self.halos.iloc[rows[::-1]]  # from the halo forward in time
        return out if snap is None else out[out["snap"].to_numpy() == snap]

    def tree(self, halo_id: int, kind: str = "main-branch", snap: int | None = None) -> pd.DataFrame:
        """Dispatch on ``kind`` (one of :data:`KINDS`)."""
        fn = {"progenitors": self.progenitors, "main-branch": self.main_branch, "descendants": self.descendants,
              "full": self.full_tree}.get(kind)
        if fn is None:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        return fn(halo_id, snap)

    def mergers(self, halo_id: int, min_ratio: float = 0.2) -> pd.DataFrame:
        """Merger events along the main branch: a descendant with two or more progenitors, each of mass at least
        ``min_ratio`` times the descendant's (Millennium's definition). One row per secondary progenitor, with
        the descendant id, snapshot, the main and secondary progenitor ids and masses, and their ratio.
        """
        if not 0 < min_ratio <= 1:
            raise InvalidInput(f"min_ratio must be in (0, 1]; got {min_ratio}")
        branch = self.main_branch(halo_id)
        first, nxt, mass = self._cols["firstProgenitorId"], self._cols["nextProgenitorId"], self._cols["mass"]
        events = []
        for desc_id in branch["id"].to_numpy():
            d = int(desc_id) - self.first
            main = int(first[d])
            if main < 0 or mass[main - self.first] < min_ratio * mass[d]:
                continue
            sib = int(nxt[main - self.first])
            while sib >= 0:
                m = mass[sib - self.first]
                if m >= min_ratio * mass[d]:
                    events.append((int(desc_id), int(self._cols["snap"][d]), main, sib, mass[main - self.first], m,
                                   m / mass[main - self.first]))
                sib = int(nxt[sib - self.first])
        return pd.DataFrame(events, columns=["descendantId", "snap", "mainProgenitorId", "secondaryId",
                                             "main_mass", "secondary_mass", "ratio"])


def walk_main_branch(lookup: Callable[[int], dict], halo_id: int) -> list[int]:
    """Main branch by following ``firstProgenitorId`` one lookup at a time (the TNG-API walk)."""
    out = []
    cur = int(halo_id)
    while cur >= 0:
        row = lookup(cur)
        out.append(cur)
        cur = int(row["firstProgenitorId"])
    return out


def walk_progenitors(lookup: Callable[[int], dict], halo_id: int) -> list[int]:
    """All progenitors by following ``firstProgenitorId`` and ``nextProgenitorId`` one lookup at a time."""
    out, stack = [], [int(halo_id)]
    while stack:
        cur = stack.pop()
        row = lookup(cur)
        out.append(cur)
        for link in (int(row["nextProgenitorId"]) if cur != halo_id else -1, int(row["firstProgenitorId"])):
            if link >= 0:
                stack.append(link)
    return sorted(out)


def walk_descendants(lookup: Callable[[int], dict], halo_id: int) -> list[int]:
    """Descendants by following ``descendantId`` one lookup at a time."""
    out = []
    cur = int(halo_id)
    while cur >= 0:
        out.append(cur)
        cur = int(lookup(cur)["descendantId"])
    return out
