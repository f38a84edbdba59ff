"""FOF against brute-force connected components, with groups across the periodic boundary."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from labservice.datasets.ingest.fof import fof_labels, halo_properties, periodic_delta

BOX = 10.0


def _clustered_points(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.1, 0.1, 9.95], [5.0, 5.0, 5.0], [9.9, 3.0, 0.05], [2.0, 7.0, 4.0]])
    blobs = [c + rng.normal(scale=s, size=(n, 3)) for c, s, n in zip(centres, (0.15, 0.3, 0.1, 0.5), (80, 60, 40, 30), strict=True)]
    return np.mod(np.concatenate(blobs + [rng.uniform(0, BOX, size=(200, 3))]), BOX)


def _brute_force_groups(pos: np.ndarray, ll: float, min_members: int) -> set[frozenset]:
    d = periodic_delta(pos[:, None, :], pos[None, :, :], BOX)
    adjacency = csr_matrix((d**2).sum(axis=-1) <= ll * ll)
    _, labels = connected_components(adjacency, directed=False)
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    return {frozenset(g.tolist()) for g in groups if g.size >= min_members}


def test_fof_matches_brute_force_components():
    for seed in (0, 1, 2):
        pos = _clustered_points(seed)
        for ll in (0.08, 0.2):
            labels = fof_labels(pos, BOX, ll, min_members=5)
            ours = {frozenset(np.flatnonzero(labels == g).tolist()) for g in range(labels.max() + 1)}
            assert ours == _brute_force_groups(pos, ll, 5)
            sizes = np.bincount(labels[labels >= 0])
            assert np.all(np.diff(sizes) <= 0), "labels must be ranked by size"


def test_properties_of_a_group_across_the_corner():
    rng = np.random.default_rng(4)
    offsets = rng.normal(scale=0.05, size=(50, 3))
    offsets -= offsets.mean(axis=0)
    pos = np.mod(offsets, BOX)  # a blob centred on the corner (0, 0, 0), split over eight periodic images
    vel = np.tile([100.0, -50.0, 0.0], (50, 1))
    labels = fof_labels(pos, BOX, 0.1, min_members=20)
    cat = halo_properties(pos, vel, np.arange(50), labels, BOX, 1.0, 1e12, 0.3, 0.7, softening=0.01)
    c = cat.columns
    assert len(cat) == 1 and c["n_particles"][0] == 50 and c["mass"][0] == 50e12
    com = np.array([c["x_com"][0], c["y_com"][0], c["z_com"][0]])
    assert np.all(np.abs(periodic_delta(com, 0.0, BOX)) < 1e-9)  # the true centre, not the box middle
    centre = np.array([c["x"][0], c["y"][0], c["z"][0]])
    assert np.all(np.abs(periodic_delta(centre, 0.0, BOX)) < 0.1)
    np.testing.assert_allclose([c["vx"][0], c["vy"][0], c["vz"][0]], [100, -50, 0])
    assert sorted(cat.member_ids.tolist()) == list(range(50))
    assert c["r200c"][0] > 0 and c["m200c"][0] <= 50e12 and c["vmax"][0] > 0
