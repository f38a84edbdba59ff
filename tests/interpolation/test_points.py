"""Point queries through real zarr datasets: exactness, polynomial reproduction, convergence, cutouts."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.errors import InvalidInput, NotFound, OutOfDomain
from labservice.interpolation.weights import METHODS
from tests.plugin.grids import TWO_PI, stretched_axis, uniform_axis


def fourier(X, Y, Z, t=0.0):
    """A smooth periodic field with two components (sum of Fourier modes)."""
    a = np.sin(X + 0.3) * np.cos(Y - 0.2) * np.sin(Z + 0.1) + 0.5 * np.cos(2 * X - Y + 0.4)
    b = np.cos(X - 0.5) * np.sin(2 * Z) + 0.3 * np.sin(Y + Z)
    return np.stack([a, b], -1)


def fourier_derivs(x, y, z):
    """Exact value, gradient (3) and hessian (xx, xy, xz, yy, yz, zz) of component a of :func:`fourier`."""
    sx, cx, sy, cy, sz, cz = np.sin(x + 0.3), np.cos(x + 0.3), np.sin(y - 0.2), np.cos(y - 0.2), np.sin(
        z + 0.1), np.cos(z + 0.1)
    ph = 2 * x - y + 0.4
    val = sx * cy * sz + 0.5 * np.cos(ph)
    grad = np.stack([cx * cy * sz - np.sin(ph), -sx * sy * sz + 0.5 * np.sin(ph), sx * cy * cz], -1)
    hess = np.stack([
        -sx * cy * sz - 2 * np.cos(ph),
        -cx * sy * sz + np.cos(ph),
        cx * cy * cz,
        -sx * cy * sz - 0.5 * np.cos(ph),
        -sx * sy * cz,
        -sx * cy * sz,
    ], -1)
    return val, grad, hess


@pytest.fixture(scope="module")
def fourier_sets(tmp_path_factory):
    """Periodic Fourier datasets at three resolutions (float64 storage so round-off stays far below)."""
    from labservice.facade import Dataset
    from labservice.storage import ChunkCache, ChunkReader, create_store
    from labservice.storage.metadata import DatasetMeta, Grid, Variable

    out = {}
    root = tmp_path_factory.mktemp("fourier")
    for n in (16, 32, 64):
        ax = uniform_axis(n)
        meta = DatasetMeta(id=f"f{n}", title="fourier", grid=Grid(x=ax, y=ax, z=ax), times=[0.0],
                           variables={"u": Variable(components=["a", "b"], dtype="float64")},
                           chunks=(8, 8, 8), shards=(16, 16, 16))
        store = create_store(str(root / f"f{n}.zarr"), meta)
        c = ax.coords()
        Z, Y, X = np.meshgrid(c, c, c, indexing="ij")
        store.write_box("u", 0, 0, 0, 0, fourier(X, Y, Z))
        out[n] = Dataset(store, ChunkReader(store, cache=ChunkCache(1 << 27)))
    return out


def _order(errors: list[float], ns=(16, 32, 64)) -> float:
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    return -slope


# m2q8 reproduces polynomials to degree 5, but its degree-6 error constant is ~1e-2 of the degree-7 one,
# so at every resolution float64 can resolve it converges one order faster than that guarantee.
OBSERVED = {"m2q8": (7, 6, 5)}
CONVERGENCE = [
    (m.name, op, OBSERVED.get(m.name, (m.order, m.order_d1, m.order_d2))[k])
    for m in METHODS.values()
    if (not m.name.startswith("fd") or m.name == "fd4lag4") and m.name != "none"
    for k, op in enumerate(("field", "gradient", "hessian"))
    if (m.order, m.order_d1, m.order_d2)[k] > 0
]


@pytest.mark.parametrize("method,operator,theory", CONVERGENCE)
def test_convergence_order_at_random_points(fourier_sets, method, operator, theory):
    pts = np.random.default_rng(7).uniform(0, TWO_PI, (400, 3))
    exact = fourier_derivs(*pts.T)[("field", "gradient", "hessian").index(operator)]
    errors = []
    for ds in fourier_sets.values():
        got = ds.points("u", pts, spatial=method, operator=operator)[:, 0]
        errors.append(np.abs(got - exact).max())
    assert abs(_order(errors) - theory) <= 0.3, (errors, _order(errors))


@pytest.mark.parametrize("method", ["fd4noint", "fd6noint", "fd8noint"])
@pytest.mark.parametrize("operator", ["gradient", "hessian"])
def test_fd_noint_converges_at_its_order_on_nodes(fourier_sets, method, operator):
    theory = METHODS[method].order_d1
    errors = []
    for n, ds in fourier_sets.items():
        idx = np.random.default_rng(3).integers(0, n, (200, 3))
        pts = idx * (TWO_PI / n)
        exact = fourier_derivs(*pts.T)[1 if operator == "gradient" else 2]
        errors.append(np.abs(ds.points("u", pts, spatial=method, operator=operator)[:, 0] - exact).max())
    assert abs(_order(errors) - theory) <= 0.3, errors


def test_laplacian_is_the_hessian_trace(fourier_sets):
    ds = fourier_sets[32]
    pts = np.random.default_rng(0).uniform(-3, 9, (300, 3))
    h = ds.points("u", pts, spatial="lag6", operator="hessian")
    lap = ds.points("u", pts, spatial="lag6", operator="laplacian")
    assert np.allclose(lap, h[..., 0] + h[..., 3] + h[..., 5], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", list(METHODS))
def test_grid_nodes_return_stored_values_exactly(make_dataset, method):
    axes = (uniform_axis(16), stretched_axis(12), uniform_axis(10, periodic=False, length=3.0))
    if METHODS[method].uniform_only:
        axes = (uniform_axis(16), uniform_axis(12), uniform_axis(10, periodic=False, length=3.0))
    ds = make_dataset(axes, {"u": fourier}, dtype="float32")
    rng = np.random.default_rng(5)
    idx = np.stack([rng.integers(0, a.size, 300) for a in axes], 1)
    pts = np.stack([a.coords()[idx[:, i]] for i, a in enumerate(axes)], 1)
    got = ds.points("u", pts, spatial=method)
    stored = ds.store.read_box("u", 0, slice(0, 10), slice(0, 12), slice(0, 16))
    assert np.array_equal(got, stored[idx[:, 2], idx[:, 1], idx[:, 0]].astype(np.float64))


def test_points_agree_with_cutout(make_dataset):
    ds = make_dataset((uniform_axis(16),) * 3, {"u": fourier}, dtype="float32", chunks=(4, 8, 8))
    cut = ds.cutout("u", time=0.0, x=(3, 19, 2), y=(0, 5, 1), z=(14, 18, 1))  # wraps x and z
    Z, Y, X = np.meshgrid(cut.z, cut.y, cut.x, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel(), Z.ravel()], 1)
    got = ds.points("u", pts, spatial="none").reshape(cut.data.shape)
    assert np.array_equal(got, cut.data.astype(np.float64))
    lag = ds.points("u", pts, spatial="lag8").reshape(cut.data.shape)
    assert np.allclose(lag, cut.data, rtol=0, atol=1e-6)


POLY_METHODS = [("trilinear", 1), ("lag4", 3), ("lag6", 5), ("lag8", 7), ("fd4lag4", 3)]


@pytest.mark.parametrize("method,degree", POLY_METHODS)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_polynomial_reproduction_in_every_axis_incl_stretched(make_dataset, method, degree, axis):
    """Wall-bounded grid with a stretched y axis: points everywhere, including clipped wall stencils."""
    axes = (uniform_axis(12, periodic=False, length=2.0, start=-1.0), stretched_axis(12),
            uniform_axis(10, periodic=False, length=1.5, start=0.25))

    def poly(X, Y, Z, t=0.0):
        s = (X, Y, Z)[axis]
        return np.stack([0.3 + s**degree - 0.5 * s, s ** max(degree - 1, 0) + 0.1 * X * Y * Z], -1)

    ds = make_dataset(axes, {"u": poly})
    rng = np.random.default_rng(axis)
    pts = np.stack([rng.uniform(*a.bounds, 400) for a in axes], 1)
    r = ds.query_points("u", pts, spatial=method)
    exact = poly(pts[:, 0], pts[:, 1], pts[:, 2])
    assert np.allclose(r.values, exact, rtol=0, atol=1e-10)
    assert not r.clipped.all()
    assert r.clipped.any() == (METHODS[method].width > 2)  # a 2-node stencil always fits
    if method != "fd4lag4":
        g = ds.points("u", pts, spatial=method, operator="gradient")
        s = pts[:, axis]
        assert np.allclose(g[:, 0, axis], degree * s ** (degree - 1) - 0.5, rtol=0, atol=1e-8)


@pytest.mark.parametrize("method,degree", [("m1q4", 2), ("m2q8", 5)])
def test_spline_polynomial_reproduction(make_dataset, method, degree):
    axes = (uniform_axis(16, periodic=False, length=2.0, start=-1.0),) * 3

    def poly(X, Y, Z, t=0.0):
        return (X**degree + Y ** (degree - 1) * Z - 2 * Z**degree)[..., None]

    ds = make_dataset(axes, {"p": poly})
    pts = np.random.default_rng(4).uniform(-1, 1, (500, 3))
    got = ds.points("p", pts, spatial=method)[:, 0]
    assert np.allclose(got, poly(*pts.T)[:, 0], rtol=0, atol=1e-11)


def test_errors_name_points_methods_and_axes(make_dataset):
    axes = (uniform_axis(16), stretched_axis(12), uniform_axis(6, periodic=False, length=1.0))
    ds = make_dataset(axes, {"u": fourier})
    with pytest.raises(OutOfDomain, match=r"point 2 has y=1\.5"):
        ds.points("u", [[0, 0, 0.5], [1, 0.2, 0.5], [0, 1.5, 0.5]])
    with pytest.raises(OutOfDomain, match="point 0 has z=nan"):
        ds.points("u", [[0, 0, np.nan]])
    with pytest.raises(InvalidInput, match="Did you mean .*'lag4'"):
        ds.points("u", [[0, 0, 0.5]], spatial="lag5")
    with pytest.raises(InvalidInput, match="Did you mean 'gradient'"):
        ds.points("u", [[0, 0, 0.5]], operator="gradiant")
    with pytest.raises(NotFound, match="unknown variable 'v'"):
        ds.points("v", [[0, 0, 0.5]])
    with pytest.raises(InvalidInput, match="axis y is stretched"):
        ds.points("u", [[0, 0, 0.5]], spatial="m2q8")
    with pytest.raises(InvalidInput, match="axis z has only 6"):
        ds.points("u", [[0, 0, 0.5]], spatial="lag8")
    with pytest.raises(InvalidInput, match="cannot give gradients"):
        ds.points("u", [[0, 0, 0.5]], spatial="none", operator="gradient")
    with pytest.raises(InvalidInput, match=r"shape \(N, 3\)"):
        ds.points("u", np.zeros((4, 2)))
    with pytest.raises(OutOfDomain, match="time must be in"):
        ds.points("u", [[0, 0, 0.5]], time=1.0)
