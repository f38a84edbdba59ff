"""Box filter and threshold against brute force; derived quantities; hypothesis over chunk faces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labservice.errors import InvalidInput, LimitExceeded, OutOfDomain
from labservice.interpolation.weights import FD_FIRST
from tests.plugin.grids import TWO_PI, uniform_axis


def noisy(seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((12, 16, 16, 3))  # (z, y, x, c) for a 16 x 16 x 12 grid

    def fn(X, Y, Z, t=0.0):
        return table
    return fn, table


@pytest.fixture
def noise_set(make_dataset):
    fn, table = noisy(0)
    axes = (uniform_axis(16), uniform_axis(16), uniform_axis(12, periodic=False, length=1.0))
    return make_dataset(axes, {"velocity": fn}, dtype="float32", chunks=(4, 8, 4)), table.astype(np.float32)


def test_box_filter_equals_brute_force(noise_set):
    ds, table = noise_set
    h = TWO_PI / 16
    rng = np.random.default_rng(1)
    idx = np.stack([rng.integers(0, 16, 40), rng.integers(0, 16, 40), rng.integers(4, 8, 40)], 1)
    pts = idx * np.array([h, h, 1.0 / 11]) + rng.uniform(-0.3, 0.3, (40, 3)) * np.array([h, h, 1 / 11])
    for width in (1, 3, 7):
        got = ds.filter("velocity", pts, width, time=0.0)
        r = width // 2
        for p, (i, j, k) in enumerate(idx):
            box = table[np.ix_(np.arange(k - r, k + r + 1), np.arange(j - r, j + r + 1) % 16,
                               np.arange(i - r, i + r + 1) % 16)]
            assert np.allclose(got[p], box.reshape(-1, 3).astype(np.float64).mean(0), rtol=1e-10, atol=1e-12)


def test_filtered_gradient_is_fd4_of_the_brute_force_filter(noise_set):
    ds, table = noise_set
    h = TWO_PI / 16
    idx = np.array([[0, 15, 5], [7, 3, 6], [15, 0, 6]])
    pts = idx * np.array([h, h, 1.0 / 11])
    got = ds.filter("velocity", pts, 3, time=0.0, operator="gradient")

    def filt(i, j, k):
        return table[np.ix_(np.arange(k - 1, k + 2), np.arange(j - 1, j + 2) % 16, np.arange(i - 1, i + 2) % 16)
                     ].reshape(-1, 3).astype(np.float64).mean(0)

    fd = FD_FIRST[0, :5]
    for p, (i, j, k) in enumerate(idx):
        ddx = sum(fd[m] * filt(i + m - 2, j, k) for m in range(5)) / h
        ddz = sum(fd[m] * filt(i, j, k + m - 2) for m in range(5)) / (1.0 / 11)
        assert np.allclose(got[p, :, 0], ddx, rtol=1e-9, atol=1e-9)
        assert np.allclose(got[p, :, 2], ddz, rtol=1e-9, atol=1e-9)
    with pytest.raises(OutOfDomain, match="too close to the z wall"):
        ds.filter("velocity", [[0, 0, 0.05]], 5, time=0.0)
    with pytest.raises(InvalidInput, match="odd number"):
        ds.filter("velocity", [[0, 0, 0.5]], 4, time=0.0)


def _fd4_gradient(table, h):
    """Brute-force FD4 velocity gradient on the periodic x/y axes of the grid, G[z, y, x, i, j]."""
    fd = FD_FIRST[0, :5]
    G = np.zeros(table.shape + (3,))
    for a, ax in ((0, 2), (1, 1)):
        G[..., a] = sum(fd[m] * np.roll(table, 2 - m, axis=ax) for m in range(5)) / h
    return G


def test_threshold_equals_brute_force(noise_set):
    ds, table = noise_set
    norm = np.sqrt((table.astype(np.float64) ** 2).sum(-1))
    res = ds.threshold("velocity", 2.2, time=0.0, x=(-3, 9), y=(2, 14), z=(1, 11))
    ix, iy, iz = np.arange(-3, 9) % 16, np.arange(2, 14), np.arange(1, 11)
    sub = norm[np.ix_(iz, iy, ix)]
    kz, ky, kx = np.nonzero(sub >= 2.2)
    expect = {(int(ix[c]), int(iy[b]), int(iz[a])) for a, b, c in zip(kz, ky, kx, strict=True)}
    assert {tuple(map(int, r)) for r in res.indices} == expect
    assert np.allclose(np.sort(res.values), np.sort(sub[sub >= 2.2]), rtol=1e-12)
    with pytest.raises(LimitExceeded, match="more than 5 nodes"):
        ds.threshold("velocity", 0.1, time=0.0, max_points=5)


def test_threshold_on_vorticity_matches_brute_force_fd4(make_dataset):
    fn, table = noisy(3)
    table = table[:, :, :, :]
    axes = (uniform_axis(16), uniform_axis(16), uniform_axis(12))
    ds = make_dataset(axes, {"velocity": fn}, dtype="float64")
    h = TWO_PI / 16
    G = _fd4_gradient(table, h)
    hz = TWO_PI / 12
    fd = FD_FIRST[0, :5]
    G[..., 2] = sum(fd[m] * np.roll(table, 2 - m, axis=0) for m in range(5)) / hz
    w = np.stack([G[..., 2, 1] - G[..., 1, 2], G[..., 0, 2] - G[..., 2, 0], G[..., 1, 0] - G[..., 0, 1]], -1)
    mag = np.sqrt((w**2).sum(-1))
    cut = np.quantile(mag, 0.97)
    res = ds.threshold("velocity", cut, time=0.0, scalar="vorticity")
    kz, ky, kx = np.nonzero(mag >= cut)
    assert {tuple(map(int, r)) for r in res.indices} == set(zip(kx.tolist(), ky.tolist(), kz.tolist(), strict=True))
    q = ds.points("velocity", res.positions, spatial="fd4noint", operator="q_criterion")
    Gp = G[res.indices[:, 2], res.indices[:, 1], res.indices[:, 0]]
    assert np.allclose(q, -0.5 * np.einsum("nij,nji->n", Gp, Gp), rtol=1e-9, atol=1e-9)
    with pytest.raises(InvalidInput, match="extra\\['nu'\\]"):
        ds.points("velocity", res.positions, operator="dissipation")


def test_derived_quantities_of_a_linear_flow(make_dataset):
    A = np.array([[0.1, 0.5, -0.2], [-0.3, 0.2, 0.4], [0.25, -0.1, -0.3]])  # G[i, j] = du_i/dx_j

    def linear(X, Y, Z, t=0.0):
        P = np.stack([X, Y, Z], -1)
        return P @ A.T

    box = uniform_axis(8, periodic=False, length=1.0)
    ds = make_dataset((box, box, box), {"velocity": linear}, extra={"nu": 0.01})
    pts = np.random.default_rng(0).uniform(0, 1, (20, 3))
    G = ds.points("velocity", pts, spatial="lag4", operator="gradient")
    assert np.allclose(G, A, atol=1e-12)
    S = 0.5 * (A + A.T)
    r = ds.query_points("velocity", pts, spatial="lag4", operator="strain_rate")
    assert r.components == ["Sxx", "Sxy", "Sxz", "Syy", "Syz", "Szz"]
    assert np.allclose(r.values, S[[0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]], atol=1e-12)
    assert np.allclose(ds.points("velocity", pts, operator="vorticity"),
                       [A[2, 1] - A[1, 2], A[0, 2] - A[2, 0], A[1, 0] - A[0, 1]], atol=1e-12)
    assert np.allclose(ds.points("velocity", pts, operator="dissipation"), 2 * 0.01 * (S * S).sum(), atol=1e-12)
    assert np.allclose(ds.points("velocity", pts, operator="r_invariant"), -np.linalg.det(A), atol=1e-12)
    Om = 0.5 * (A - A.T)
    l2 = np.linalg.eigvalsh(S @ S + Om @ Om)[1]
    assert np.allclose(ds.points("velocity", pts, operator="lambda2"), l2, atol=1e-12)
    names = ds.query_points("velocity", pts[:1], operator="gradient").components
    assert names[:4] == ["dc0/dx", "dc0/dy", "dc0/dz", "dc1/dx"]


@pytest.fixture(scope="module")
def seam_set(tmp_path_factory):
    from labservice.facade import Dataset
    from labservice.storage import ChunkCache, ChunkReader, create_store
    from labservice.storage.metadata import DatasetMeta, Grid, Variable

    ax = uniform_axis(32)
    meta = DatasetMeta(id="seam", title="seam", grid=Grid(x=ax, y=ax, z=ax), times=[0.0],
                       variables={"u": Variable(components=["a"], dtype="float64")}, chunks=(4, 8, 8),
                       shards=(8, 16, 32))
    store = create_store(str(tmp_path_factory.mktemp("seam") / "s.zarr"), meta)
    c = ax.coords()
    Z, Y, X = np.meshgrid(c, c, c, indexing="ij")
    store.write_box("u", 0, 0, 0, 0, (np.sin(X) * np.cos(2 * Y) + np.cos(Z))[..., None])
    return Dataset(store, ChunkReader(store, cache=ChunkCache(1 << 26)))


# coordinates exactly on chunk faces (multiples of 4 or 8 nodes), shard faces, the periodic seam
FACES = st.sampled_from([0.0, TWO_PI, -TWO_PI, 4 * TWO_PI / 32, 8 * TWO_PI / 32, 16 * TWO_PI / 32,
                         TWO_PI - 1e-12, TWO_PI * (31.5 / 32)])
COORD = st.one_of(FACES, st.floats(-10.0, 10.0, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(COORD, COORD, COORD), min_size=1, max_size=20),
       st.sampled_from(["lag4", "lag8", "m2q8", "fd4lag4"]))
def test_random_points_on_faces_and_seam_match_the_analytic_field(seam_set, pts, method):
    p = np.array(pts)
    got = seam_set.points("u", p, spatial=method)[:, 0]
    exact = np.sin(p[:, 0]) * np.cos(2 * p[:, 1]) + np.cos(p[:, 2])
    assert np.abs(got - exact).max() < 2e-3
    shifted = seam_set.points("u", p + TWO_PI * np.array([1, -2, 3]), spatial=method)[:, 0]
    assert np.allclose(shifted, got, rtol=0, atol=1e-12)  # periodic images agree
