"""Friends-of-friends halo finding in a periodic box, and the halo properties a catalog stores.

Linking uses a cell grid with cells at least one linking length wide and a union-find forest (numba), so
memory stays O(N) whatever the clustering. Properties follow the Millennium/TNG catalogs: FOF mass, centre of
mass (periodic-safe), potential-minimum centre, mean velocity, R200c/M200c from all particles around the
centre, and vmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy.spatial import cKDTree

from labservice.datasets.ingest.mesh import G_MPC_KMS2_MSUN, RHO_CRIT0
from labservice.errors import InvalidInput


@numba.njit(cache=True, inline="always")
def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression keeps later finds O(1)
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@numba.njit(cache=True, inline="always")
def _dist2(pos: np.ndarray, i: int, j: int, box: float) -> float:
    half = 0.5 * box
    d2 = 0.0
    for c in range(3):
        d = pos[i, c] - pos[j, c]
        if d > half:
            d -= box
        elif d < -half:
            d += box
        d2 += d * d
    return d2


@numba.njit(cache=True)
def _fof_roots(pos: np.ndarray, box: float, ll: float, ncell: int) -> np.ndarray:
    n = pos.shape[0]
    cell = np.empty(n, dtype=np.int64)
    for i in range(n):
        ix = int(pos[i, 0] / box * ncell) % ncell
        iy = int(pos[i, 1] / box * ncell) % ncell
        iz = int(pos[i, 2] / box * ncell) % ncell
        cell[i] = (ix * ncell + iy) * ncell + iz
    order = np.argsort(cell)
    sorted_cells = cell[order]
    # Occupied cells and where their particles start in `order`.
    starts = [0]
    for i in range(1, n):
        if sorted_cells[i] != sorted_cells[i - 1]:
            starts.append(i)
    starts.append(n)
    nocc = len(starts) - 1
    ucell = np.empty(nocc, dtype=np.int64)
    start = np.empty(nocc + 1, dtype=np.int64)
    for c in range(nocc):
        ucell[c] = sorted_cells[starts[c]]
        start[c] = starts[c]
    start[nocc] = n
    # Positions in cell order: the pair loops below then read memory contiguously.
    spos = np.empty((n, 3))
    for a in range(n):
        spos[a] = pos[order[a]]
    parent = np.arange(n)  # union-find over positions in cell order
    ll2 = ll * ll
    for c in range(nocc):
        key = ucell[c]
        cz = key % ncell
        cy = (key // ncell) % ncell
        cx = key // (ncell * ncell)
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    nkey = (((cx + dx) % ncell) * ncell + (cy + dy) % ncell) * ncell + (cz + dz) % ncell
                    if nkey < key:  # each unordered pair of cells once
                        continue
                    j = np.searchsorted(ucell, nkey)
                    if j >= nocc or ucell[j] != nkey:
                        continue
                    for a in range(start[c], start[c + 1]):
                        b0 = a + 1 if nkey == key else start[j]
                        for b in range(b0, start[j + 1]):
                            # The distance is cheaper than two finds, and most neighbour pairs are not linked.
                            if _dist2(spos, a, b, box) > ll2:
                                continue
                            ra = _find(parent, a)
                            rb = _find(parent, b)
                            if ra != rb:
                                if order[ra] < order[rb]:
                                    parent[rb] = ra
                                else:
                                    parent[ra] = rb
    # Back to input order; each group's root is its smallest input index, as before.
    roots = np.empty(n, dtype=np.int64)
    for a in range(n):
        roots[order[a]] = order[_find(parent, a)]
    return roots


def fof_labels(pos: np.ndarray, box: float, linking_length: float, min_members: int = 20) -> np.ndarray:
    """Group label of every particle (0 = largest group), -1 for particles in groups below ``min_members``.

    Parameters
    ----------
    pos : ndarray (N, 3)
        Positions in [0, box).
    box : float
        Periodic box length.
    linking_length : float
        Absolute linking length (``b`` times the mean interparticle spacing).
    min_members : int
        Smallest group kept.
    """
    if not 0 < linking_length < box / 3:
        raise InvalidInput(f"linking_length must be in (0, box/3 = {box / 3:.4g}); got {linking_length}")
    ncell = int(min(box / linking_length, 1024))
    roots = _fof_roots(np.ascontiguousarray(pos, dtype=np.float64), float(box), float(linking_length), ncell)
    uniq, inverse, counts = np.unique(roots, return_inverse=True, return_counts=True)
    keep = counts >= min_members
    # Rank kept groups by size (largest first), ties by their smallest particle index: deterministic.
    kept = np.flatnonzero(keep)
    rank_order = kept[np.lexsort((uniq[kept], -counts[kept]))]
    label_of_group = np.full(uniq.size, -1, dtype=np.int64)
    label_of_group[rank_order] = np.arange(rank_order.size)
    return label_of_group[inverse]


@numba.njit(cache=True)
def _potential_minimum(rel: np.ndarray, eps: float, stride: int) -> int:
    # Softened potential of every member from every `stride`-th member (a subsample for big halos).
    n = rel.shape[0]
    best = 0
    best_phi = np.inf
    eps2 = eps * eps
    for i in range(n):
        phi = 0.0
        for j in range(0, n, stride):
            if j == i:
                continue
            dx = rel[i, 0] - rel[j, 0]
            dy = rel[i, 1] - rel[j, 1]
            dz = rel[i, 2] - rel[j, 2]
            phi -= 1.0 / np.sqrt(dx * dx + dy * dy + dz * dz + eps2)
        if phi < best_phi:
            best_phi = phi
            best = i
    return best


def periodic_delta(x: np.ndarray, ref: np.ndarray, box: float) -> np.ndarray:
    """Shortest periodic displacement x - ref."""
    return (x - ref + 0.5 * box) % box - 0.5 * box


@dataclass
class HaloCatalog:
    """Halos of one snapshot in FOF rank order: columns plus member particle ids (grouped by halo)."""

    columns: dict[str, np.ndarray]
    member_ids: np.ndarray
    member_start: np.ndarray

    def __len__(self) -> int:
        return int(self.member_start.size)


def halo_properties(
    pos: np.ndarray,
    vel: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    box: float,
    a: float,
    particle_mass: float,
    omega_m: float,
    omega_l: float,
    softening: float,
    max_sources: int = 1000,
) -> HaloCatalog:
    """Measure every FOF group (label >= 0).

    Positions are comoving Mpc/h, velocities peculiar km/s, masses Msun/h. R200c is comoving Mpc/h: the
    outermost radius around the potential-minimum centre inside which the mean density (of all particles)
    is still at least 200 times the critical density at ``a``; M200c is the mass inside it.

    R200c and M200c are NaN when the enclosed density never reaches 200 rho_crit outside the innermost
    ``min_count`` particles: a poorly resolved halo (in a PM run, mostly those under ~100 particles, whose
    cores the mesh smooths below that density). A radius of zero would claim a measurement; NaN says there
    is none. The potential minimum uses at most ``max_sources`` members as sources (a regular subsample),
    which keeps big halos O(n) and moves the centre by much less than the softening.
    """
    nh = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    members = np.flatnonzero(labels >= 0)
    members = members[np.argsort(labels[members], kind="stable")]
    counts = np.bincount(labels[members], minlength=nh) if nh else np.zeros(0, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if nh else np.zeros(0, np.int64)
    rho_200 = 200.0 * RHO_CRIT0 * (omega_m / a**3 + omega_l) * a**3  # comoving units
    tree = cKDTree(pos, boxsize=box) if nh else None
    cols = {name: np.zeros(nh) for name in (
        "x", "y", "z", "x_com", "y_com", "z_com", "vx", "vy", "vz", "m200c", "r200c", "vmax", "vdisp")}
    for h in range(nh):
        idx = members[start[h] : start[h] + counts[h]]
        p = pos[idx].astype(np.float64)
        rel = periodic_delta(p, p[0], box)
        com = np.mod(p[0] + rel.mean(axis=0), box)
        stride = max(1, idx.size // max_sources)
        centre = np.mod(p[0] + rel[_potential_minimum(rel, softening, stride)], box)
        v = vel[idx].astype(np.float64)
        vmean = v.mean(axis=0)
        r_fof = np.sqrt((periodic_delta(p, com, box) ** 2).sum(axis=1)).max()
        r200, m200, vmax = _spherical_overdensity(tree, centre, max(r_fof, softening), box, particle_mass, rho_200, a)
        for name, val in zip(("x", "y", "z"), centre, strict=True):
            cols[name][h] = val
        for name, val in zip(("x_com", "y_com", "z_com"), com, strict=True):
            cols[name][h] = val
        for name, val in zip(("vx", "vy", "vz"), vmean, strict=True):
            cols[name][h] = val
        cols["r200c"][h], cols["m200c"][h], cols["vmax"][h] = r200, m200, vmax
        cols["vdisp"][h] = np.sqrt(((v - vmean) ** 2).sum(axis=1).mean() / 3.0)
    cols["n_particles"] = counts.astype(np.int64)
    cols["mass"] = counts * particle_mass
    cols["fof_rank"] = np.arange(nh, dtype=np.int64)
    return HaloCatalog(cols, np.asarray(ids)[members], start)


def _spherical_overdensity(tree, centre, r_search, box, m_p, rho_200, a, min_count=5):
    # R200c is the outermost radius whose enclosed mean density is still >= 200 rho_crit (NaN if none); grow
    # the search sphere (at most 6 doublings) until its edge is below the threshold so that radius lies inside.
    for _ in range(6):
        found = np.asarray(tree.query_ball_point(centre, r_search), dtype=np.int64)
        d = np.sort(np.sqrt((periodic_delta(tree.data[found], centre, box) ** 2).sum(axis=1)))
        d = np.maximum(d, 1e-6)
        enclosed = np.arange(1, d.size + 1) * m_p
        density = enclosed / (4.0 / 3.0 * np.pi * d**3)
        if density[-1] < rho_200 or r_search >= box / 4:
            break
        r_search *= 2
    above = np.flatnonzero(density[min_count:] >= rho_200)
    if above.size:
        k = min_count + above[-1]
        r200, m200, inner = float(d[k]), float(enclosed[k]), k + 1
    else:
        r200, m200, inner = np.nan, np.nan, 0  # undefined: never dense enough (see halo_properties)
    # vmax: the peak circular velocity inside R200 (at least the 8 innermost particles), skipping the core.
    limit = max(inner, min_count + 8)
    vc = np.sqrt(G_MPC_KMS2_MSUN * enclosed[min_count:limit] / (a * d[min_count:limit]))
    return r200, m200, float(vc.max()) if vc.size else 0.0
