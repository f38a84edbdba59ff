"""Merger trees: depth-first invariants on every tree, range queries == pointer walks, ytree reads our export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labservice.datasets.ingest.trees import check_depth_first, depth_first_ids, link_descendants
from labservice.datasets.treequery import TreeTable, walk_descendants, walk_main_branch, walk_progenitors


def test_hand_made_tree_numbering():
    # Root R (snap 2) <- A (snap 1, heavy), B (snap 1, light); A <- C, D (snap 0); B <- E (snap 0).
    snap = np.array([2, 1, 1, 0, 0, 0])
    mass = np.array([10.0, 6.0, 3.0, 2.0, 4.0, 3.0])
    desc = np.array([-1, 0, 0, 1, 1, 2])
    t = depth_first_ids(snap, mass, desc)
    # Pre-order, heavier progenitor first: R=0, A=1, D=2, C=3, B=4, E=5.
    assert t["id"].tolist() == [0, 1, 4, 3, 2, 5]
    assert t["lastProgenitorId"].tolist() == [5, 3, 5, 3, 2, 5]
    assert t["mainLeafId"].tolist() == [2, 2, 5, 3, 2, 5]
    assert t["firstProgenitorId"].tolist() == [1, 2, 5, -1, -1, -1]
    assert t["nextProgenitorId"].tolist() == [-1, 4, -1, -1, 3, -1]
    table = {k: v[np.argsort(t["id"])] for k, v in t.items()} | {"snap": snap[np.argsort(t["id"])],
                                                                  "mass": mass[np.argsort(t["id"])]}
    assert check_depth_first(table) == []
    table["lastProgenitorId"] = table["lastProgenitorId"].copy()
    table["lastProgenitorId"][1] = 2
    assert check_depth_first(table), "a broken range must be reported"


def test_link_descendants_by_most_shared_particles():
    ids = [np.array([1, 2, 3, 4, 5, 6]), np.array([1, 2, 9, 3, 4, 5])]
    starts = [np.array([0, 3]), np.array([0, 3])]  # snap 0: {1,2,3}, {4,5,6}; snap 1: {1,2,9}, {3,4,5}
    desc, shared = link_descendants(ids, starts)
    assert desc[0].tolist() == [0, 1] and desc[1].tolist() == [-1, -1]
    np.testing.assert_allclose(shared[0], [2 / 3, 2 / 3])


@pytest.fixture(scope="module")
def halos(small_sim):
    return pd.read_parquet(small_sim / "halos.parquet")


def test_depth_first_invariants_on_every_tree(halos):
    assert len(halos) > 20
    table = {c: halos[c].to_numpy() for c in halos.columns}
    assert check_depth_first(table) == []
    for root in halos.loc[halos["descendantId"] < 0, "id"]:
        rows = halos[halos["treeRootId"] == root]
        sub = {c: rows[c].to_numpy() for c in rows.columns}
        assert check_depth_first(sub) == [], f"tree {root}"


def test_range_queries_equal_pointer_walks(halos):
    tree = TreeTable(halos)
    by_id = halos.set_index("id")
    lookup = lambda i: by_id.loc[i]  # noqa: E731 - one row per call, like a REST client
    for hid in halos["id"]:
        assert tree.main_branch(hid)["id"].tolist() == walk_main_branch(lookup, hid)
        assert tree.progenitors(hid)["id"].tolist() == walk_progenitors(lookup, hid)
        assert tree.descendants(hid)["id"].tolist() == walk_descendants(lookup, hid)
        full = tree.full_tree(hid)
        assert (full["treeRootId"] == halos.loc[hid, "treeRootId"]).all()


def test_mergers_follow_the_definition(halos):
    tree = TreeTable(halos)
    root = int(halos.loc[halos["descendantId"] < 0].sort_values("mass").iloc[-1]["id"])
    events = tree.mergers(root, min_ratio=0.05)
    for ev in events.itertuples():
        desc_mass = halos.loc[ev.descendantId, "mass"]
        assert ev.secondary_mass >= 0.05 * desc_mass and ev.main_mass >= ev.secondary_mass
        assert halos.loc[ev.secondaryId, "descendantId"] == ev.descendantId
    assert len(tree.mergers(root, min_ratio=1.0)) == 0


def test_ytree_reads_our_trees_with_the_same_main_branches(small_sim, halos):
    ytree = pytest.importorskip("ytree")
    arbor = ytree.load(str(small_sim / "trees" / "tree_0_0_0.dat"))
    roots = halos[halos["descendantId"] < 0]
    assert arbor.size == len(roots)
    tree = TreeTable(halos)
    for node in arbor:
        ours = tree.main_branch(int(node["uid"]))["id"].tolist()
        assert [int(u) for u in node["prog", "uid"]] == ours
