"""Merger trees: link halos across snapshots by shared particles, number trees depth-first, export.

Depth-first numbering (Lemson & Springel 2006): a tree's nodes get consecutive ids in pre-order, the main
(most massive) progenitor visited first, so every node's progenitor subtree is the id range
``[id, lastProgenitorId]`` and its main branch is ``[id, mainLeafId]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

TREE_COLUMNS = (
    "id", "descendantId", "firstProgenitorId", "nextProgenitorId", "lastProgenitorId", "mainLeafId", "treeRootId",
)


def link_descendants(
    member_ids: Sequence[np.ndarray], member_start: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Descendant of every halo in the next snapshot: the halo there holding most of its particles.

    Parameters
    ----------
    member_ids, member_start : sequences over snapshots (increasing time)
        Particle ids of each snapshot's halos, grouped by halo, and where each halo's group starts.

    Returns
    -------
    desc, shared : lists over snapshots
        Index of the descendant in the next snapshot's catalog (-1 if none) and the fraction of the halo's
        particles it holds.
    """
    desc, shared = [], []
    for s in range(len(member_ids)):
        n_h = member_start[s].size
        d = np.full(n_h, -1, dtype=np.int64)
        f = np.zeros(n_h)
        if s + 1 < len(member_ids) and n_h and member_start[s + 1].size:
            nxt_ids = member_ids[s + 1]
            counts_next = np.diff(np.append(member_start[s + 1], nxt_ids.size))
            owner_next = np.repeat(np.arange(member_start[s + 1].size), counts_next)
            order = np.argsort(nxt_ids, kind="stable")
            sorted_ids = nxt_ids[order]
            ids = member_ids[s]
            pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(sorted_ids.size - 1, 0))
            found = sorted_ids[pos] == ids
            owner = np.where(found, owner_next[order[pos]], -1)
            counts = np.diff(np.append(member_start[s], ids.size))
            halo_of = np.repeat(np.arange(n_h), counts)
            ok = owner >= 0
            # Count (halo, next halo) pairs; the largest count per halo wins (ties: the lower next index).
            pair = halo_of[ok] * (member_start[s + 1].size + 1) + owner[ok]
            uniq, cnt = np.unique(pair, return_counts=True)
            h, o = uniq // (member_start[s + 1].size + 1), uniq % (member_start[s + 1].size + 1)
            best = np.lexsort((o, -cnt, h))
            first = np.ones(best.size, dtype=bool)
            first[1:] = h[best][1:] != h[best][:-1]
            win = best[first]
            d[h[win]] = o[win]
            f[h[win]] = cnt[win] / counts[h[win]]
        desc.append(d)
        shared.append(f)
    return desc, shared


def depth_first_ids(
    snap: np.ndarray, mass: np.ndarray, descendant: np.ndarray, first_id: int = 0
) -> dict[str, np.ndarray]:
    """Number every tree depth-first and derive the Lemson & Springel pointer columns.

    Parameters
    ----------
    snap, mass : ndarray (H,)
        Snapshot number and mass of every halo (any order).
    descendant : ndarray (H,)
        Row index of each halo's descendant, -1 for tree roots.
    first_id : int
        Id given to the first node.

    Returns
    -------
    dict of ndarray (H,), aligned with the input rows
        ``id``, ``descendantId``, ``firstProgenitorId``, ``nextProgenitorId``, ``lastProgenitorId``,
        ``mainLeafId``, ``treeRootId`` (-1 where there is no such node).
    """
    n = snap.size
    # Progenitors of each node, most massive first (ties: lower row), as a CSR list.
    has_desc = np.flatnonzero(descendant >= 0)
    order = has_desc[np.lexsort((has_desc, -mass[has_desc], descendant[has_desc]))]
    child_start = np.searchsorted(descendant[order], np.arange(n + 1))
    roots = np.flatnonzero(descendant < 0)
    roots = roots[np.lexsort((roots, -mass[roots], -snap[roots]))]
    ids = np.full(n, -1, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    root_of = np.full(n, -1, dtype=np.int64)
    next_id = first_id
    for root in roots:
        stack = [int(root)]
        while stack:
            node = stack.pop()
            ids[node] = next_id
            root_of[node] = root
            next_id += 1
            kids = order[child_start[node] : child_start[node + 1]]
            stack.extend(int(k) for k in kids[::-1])  # main progenitor popped first
    # Subtree ends: walk nodes in reverse pre-order so children are final before their descendant.
    by_id = np.argsort(ids)
    last[:] = ids
    for node in by_id[::-1]:
        d = descendant[node]
        if d >= 0 and last[node] > last[d]:
            last[d] = last[node]
    first_prog = np.full(n, -1, dtype=np.int64)
    next_prog = np.full(n, -1, dtype=np.int64)
    for node in range(n):
        kids = order[child_start[node] : child_start[node + 1]]
        if kids.size:
            first_prog[node] = ids[kids[0]]
            next_prog[kids[:-1]] = ids[kids[1:]]
    main_leaf = ids.copy()
    for node in by_id[::-1]:  # a node's main leaf is its first progenitor's, computed before it
        kids = order[child_start[node] : child_start[node + 1]]
        if kids.size:
            main_leaf[node] = main_leaf[kids[0]]
    return {
        "id": ids,
        "descendantId": np.where(descendant >= 0, ids[np.maximum(descendant, 0)], -1),
        "firstProgenitorId": first_prog,
        "nextProgenitorId": next_prog,
        "lastProgenitorId": last,
        "mainLeafId": main_leaf,
        "treeRootId": ids[root_of],
    }


def check_depth_first(t: dict[str, np.ndarray]) -> list[str]:
    """Return every violated depth-first invariant (empty when the table is consistent); rows sorted by id."""
    problems = []
    ids = t["id"]
    n = ids.size
    if n == 0:
        return problems
    if not np.array_equal(ids, np.arange(ids[0], ids[0] + n)):
        return ["ids are not consecutive"]
    desc, first, nxt, last, leaf, root = (t[c] for c in TREE_COLUMNS[1:])
    snap, mass = t["snap"], t["mass"]
    has_first = first >= 0
    if np.any(first[has_first] != ids[has_first] + 1):
        problems.append("firstProgenitorId != id + 1")
    if np.any(last < ids):
        problems.append("lastProgenitorId < id")
    if np.any((leaf < ids) | (leaf > last)):
        problems.append("mainLeafId outside [id, lastProgenitorId]")
    d = desc >= 0
    drow = desc[d] - ids[0]
    if np.any(snap[drow] <= snap[d]):
        problems.append("a descendant is not at a later snapshot")
    if np.any((ids[d] <= desc[d]) | (last[d] > last[drow])):
        problems.append("a subtree is not inside its descendant's id range")
    if np.any(root[d] != root[drow]) or np.any(root[~d] != ids[~d]):
        problems.append("treeRootId inconsistent")
    # The range [id, lastProgenitorId] holds exactly the node's subtree: its size equals the range length.
    size = np.ones(n, dtype=np.int64)
    for r in range(n - 1, -1, -1):  # children have larger ids, so they are complete before their descendant
        if desc[r] >= 0:
            size[desc[r] - ids[0]] += size[r]
    if np.any(last - ids + 1 != size):
        problems.append("[id, lastProgenitorId] is not exactly the progenitor subtree")
    # Main branch: following firstProgenitorId from id reaches mainLeafId.
    cur = ids.copy()
    for _ in range(int(snap.max() - snap.min() + 2)):
        step = first[cur - ids[0]]
        moving = step >= 0
        if not moving.any():
            break
        cur = np.where(moving, step, cur)
    if np.any(cur != leaf):
        problems.append("following firstProgenitorId does not reach mainLeafId")
    # Siblings: nextProgenitorId shares the descendant and is not more massive; it starts after our subtree.
    s = nxt >= 0
    srow = nxt[s] - ids[0]
    if np.any(desc[srow] != desc[s]) or np.any(nxt[s] != last[s] + 1) or np.any(mass[srow] > mass[s]):
        problems.append("nextProgenitorId is not the next, lighter sibling")
    # The first progenitor is the most massive one.
    fp = has_first
    if np.any(desc[first[fp] - ids[0]] != ids[fp]):
        problems.append("firstProgenitorId's descendant is not the node")
    return problems


CTREES_FIELDS = (
    "scale", "id", "desc_scale", "desc_id", "num_prog", "pid", "upid", "desc_pid", "phantom", "sam_mvir", "Mvir",
    "Rvir", "rs", "vrms", "mmp?", "scale_of_last_MM", "vmax", "x", "y", "z", "vx", "vy", "vz", "Jx", "Jy", "Jz",
    "Spin", "Breadth_first_ID", "Depth_first_ID", "Tree_root_ID", "Orig_halo_ID", "Snap_idx",
    "Next_coprogenitor_depthfirst_ID", "Last_progenitor_depthfirst_ID", "Last_mainleaf_depthfirst_ID",
)


def write_consistent_trees(path: str | Path, halos, box: float, omega_m: float, omega_l: float, h: float) -> Path:
    """Write the trees as a consistent-trees ``tree_0_0_0.dat`` (the ASCII format ytree and Rockstar users read).

    ``halos`` is a table (mapping of column -> array) sorted by ``id`` with the depth-first columns plus
    ``snap``, ``a``, ``mass``, ``r200c``, ``vdisp``, ``vmax``, ``x``..``vz`` and ``fof_rank``. ``Mvir`` holds
    the FOF mass (the mass that defines our main progenitors), ``Rvir`` R200c in comoving kpc/h.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(halos["id"])
    row_of = lambda i: i - ids[0]  # noqa: E731 - ids are consecutive
    desc = np.asarray(halos["descendantId"])
    a = np.asarray(halos["a"])
    d_ok = desc >= 0
    desc_scale = np.where(d_ok, a[row_of(np.maximum(desc, ids[0]))], -1.0)
    nprog = np.bincount(row_of(desc[d_ok]), minlength=ids.size)
    mmp = np.zeros(ids.size, dtype=np.int64)
    fp = np.asarray(halos["firstProgenitorId"])
    mmp[row_of(fp[fp >= 0])] = 1
    zeros = np.zeros(ids.size)
    cols = [
        a, ids, desc_scale, desc, nprog, -np.ones(ids.size), -np.ones(ids.size), -np.ones(ids.size), zeros,
        halos["mass"], halos["mass"], np.nan_to_num(np.asarray(halos["r200c"]) * 1e3), zeros, halos["vdisp"], mmp, zeros,
        halos["vmax"], halos["x"], halos["y"], halos["z"], halos["vx"], halos["vy"], halos["vz"], zeros, zeros,
        zeros, zeros, ids, ids, halos["treeRootId"], halos["fof_rank"], halos["snap"], halos["nextProgenitorId"],
        halos["lastProgenitorId"], halos["mainLeafId"],
    ]
    int_cols = {1, 3, 4, 5, 6, 7, 8, 14, 27, 28, 29, 30, 31, 32, 33, 34}
    header = [
        "#" + " ".join(f"{name}({i})" for i, name in enumerate(CTREES_FIELDS)),
        f"#Omega_M = {omega_m:.6f}; Omega_L = {omega_l:.6f}; h0 = {h:.6f}",
        f"#Full box size = {box:.6f} Mpc/h",
        "#Consistent Trees format, written by labservice (FOF halos, trees by shared particle ids)",
        "#Scale: Scale factor of halo.",
        "#Mvir: FOF mass (Msun/h)",
        "#Rvir: R200c (kpc/h comoving); 0 where the halo never reaches 200 rho_crit (NaN in our catalog)",
        "#Vmax: Maximum circular velocity (km/s physical)",
        "#X/Y/Z: Halo position (Mpc/h comoving)",
        "#VX/VY/VZ: Halo velocity (km/s physical, peculiar)",
    ]
    roots = np.flatnonzero(~d_ok)
    lines = header + [str(roots.size)]
    fmt = [("%d" if i in int_cols else "%.6g") for i in range(len(cols))]
    table = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
    last = np.asarray(halos["lastProgenitorId"])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
        for r in roots:
            f.write(f"#tree {ids[r]}\n")
            np.savetxt(f, table[r : row_of(last[r]) + 1], fmt=fmt)
    return path
