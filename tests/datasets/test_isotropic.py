"""The isotropic DNS: exact solutions, exact invariants, the energy budget, and the stored demo field."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.datasets.demo.isotropic import DNSConfig, SpectralNS, refine, run_to, write_isotropic_run
from labservice.datasets.ingest import ingest_descriptor
from labservice.storage import open_store


def spectral_divergence_ratio(u: np.ndarray) -> float:
    """||div u|| / ||grad u|| computed spectrally; u has shape (nz, ny, nx, 3) on a periodic 2*pi box."""
    n = u.shape[0]
    uh = np.fft.rfftn(np.moveaxis(u.astype(np.float64), -1, 0), axes=(1, 2, 3))
    k = np.fft.fftfreq(n, 1.0 / n)
    kz, ky, kx = k[:, None, None], k[None, :, None], np.fft.rfftfreq(n, 1.0 / n)[None, None, :]
    div = kx * uh[0] + ky * uh[1] + kz * uh[2]
    grad = sum(np.abs(kk * uh[c]) ** 2 for c in range(3) for kk in (kx, ky, kz))
    return float(np.sqrt(np.sum(np.abs(div) ** 2) / np.sum(grad)))


def taylor_green(solver: SpectralNS) -> None:
    """u = (sin x cos y cos z, -cos x sin y cos z, 0) on the solver's grid."""
    n = solver.n
    x = 2 * np.pi * np.arange(n) / n
    z, y, xx = np.meshgrid(x, x, x, indexing="ij")
    u = np.stack([np.sin(xx) * np.cos(y) * np.cos(z), -np.cos(xx) * np.sin(y) * np.cos(z), 0 * z])
    solver.uh = solver.to_spectral(u)


def test_taylor_green_pressure_is_exact():
    solver = SpectralNS(32, nu=0.01, epsilon=0.0)
    taylor_green(solver)
    n = 32
    x = 2 * np.pi * np.arange(n) / n
    z, y, xx = np.meshgrid(x, x, x, indexing="ij")
    exact = (np.cos(2 * xx) + np.cos(2 * y)) * (np.cos(2 * z) + 2) / 16
    exact -= exact.mean()  # stored pressure has zero mean
    np.testing.assert_allclose(solver.pressure(), exact, rtol=0, atol=1e-14)


def test_rotational_form_equals_projected_advection():
    """P[u x omega] must equal P[-(u . grad) u]: checks the curl, the cross product and the projection."""
    solver = SpectralNS(24, nu=0.0, epsilon=0.0)
    rng = np.random.default_rng(1)
    low = (np.abs(solver.kx) <= 2) & (np.abs(solver.ky) <= 2) & (np.abs(solver.kz) <= 2)  # no aliasing
    noise = solver.to_spectral(rng.standard_normal((3, 24, 24, 24)))
    solver.uh = solver.project(noise * low)
    u = solver.velocity()
    k = (solver.kx, solver.ky, solver.kz)
    adv = np.zeros_like(u)
    for j in range(3):
        du_j = solver.to_physical(1j * k[j] * solver.uh)  # d u_i / d x_j for every i
        adv += u[j] * du_j
    expected = solver.project(solver.to_spectral(-adv))
    np.testing.assert_allclose(solver.rhs(solver.uh), expected, rtol=0, atol=1e-13)


def test_nonlinear_term_conserves_energy():
    solver = SpectralNS(32, nu=0.0, epsilon=0.0)
    solver.randomize(seed=5)
    nl = solver.rhs(solver.uh)
    rate = np.sum(solver.weight * np.real(np.conj(solver.uh) * nl))
    scale = np.sum(solver.weight * np.abs(solver.uh) * np.abs(nl))
    assert abs(rate) < 1e-13 * scale


def test_beltrami_flow_decays_exactly():
    """An ABC flow is an exact Navier-Stokes solution that decays as exp(-nu k^2 t)."""
    nu, n = 0.05, 16
    solver = SpectralNS(n, nu=nu, epsilon=0.0)
    x = 2 * np.pi * np.arange(n) / n
    z, y, xx = np.meshgrid(x, x, x, indexing="ij")
    a, b, c = 1.0, 0.7, 0.4
    u0 = np.stack(
        [a * np.sin(z) + c * np.cos(y), b * np.sin(xx) + a * np.cos(z), c * np.sin(y) + b * np.cos(xx)]
    )
    solver.uh = solver.to_spectral(u0)
    run_to(solver, 0.5, cfl=0.5)
    np.testing.assert_allclose(solver.velocity(), u0 * np.exp(-nu * 0.5), rtol=0, atol=1e-7)
    assert solver.time == 0.5


def test_energy_budget_and_constant_power_forcing():
    """dE/dt = P - D: the injected power is exactly epsilon and the budget closes over many steps."""
    solver = SpectralNS(32, nu=0.02, epsilon=0.1)
    solver.randomize(seed=3)
    dt = 0.004
    e0 = solver.energy()
    rates = [solver.injection() - solver.dissipation()]
    for _ in range(40):
        assert solver.injection() == pytest.approx(0.1, rel=1e-12)
        solver.step(dt)
        rates.append(solver.injection() - solver.dissipation())
    integral = dt * (np.sum(rates) - 0.5 * (rates[0] + rates[-1]))  # trapezoid rule
    gross = dt * 40 * (0.1 + solver.dissipation())
    assert abs(solver.energy() - e0 - integral) < 1e-3 * gross
    assert abs(solver.energy() - e0) > 1e-2 * gross  # the energy did change: the check is not vacuous


def test_refine_keeps_the_field():
    coarse = SpectralNS(16, nu=0.02, epsilon=0.1)
    coarse.randomize(seed=2)
    fine = refine(coarse, 32)
    assert fine.energy() == pytest.approx(coarse.energy(), rel=1e-12)
    np.testing.assert_allclose(fine.velocity()[:, ::2, ::2, ::2], coarse.velocity(), rtol=0, atol=1e-12)


def test_small_run_through_ingest_is_turbulent_and_divergence_free(tmp_path):
    config = DNSConfig(n=32, transient=1.0, settle=0.2, snapshots=3, interval=0.05)
    gen = write_isotropic_run(tmp_path / "raw", "iso32", "../iso32", config)
    lines = []
    try:
        while True:
            lines.append(next(gen))
    except StopIteration as done:
        descriptor = done.value
    assert any("Re_lambda" in line for line in lines)
    url = ingest_descriptor(descriptor, progress=False)
    store = open_store(url)
    meta = store.meta
    assert meta.times == pytest.approx([6 * 0.2, 6 * 0.2 + 0.05, 6 * 0.2 + 0.1], abs=1e-12)
    assert meta.extra["re_lambda"] > 10 and meta.extra["statistics"]["kolmogorov_length"] > 0
    assert len(meta.extra["energy_spectrum"]["E"]) == 11  # shells 0 .. k_max = 10
    for t in range(3):
        u = store.read_box("velocity", t, slice(None), slice(None), slice(None))
        assert u.dtype == np.float32
        assert spectral_divergence_ratio(u) < 1e-5
        p = store.read_box("pressure", t, slice(None), slice(None), slice(None))
        assert abs(float(p.mean())) < 1e-6 * float(np.abs(p).max())
    store.close()


def test_built_isotropic64_is_divergence_free_with_statistics(demo_data):
    url = demo_data / "isotropic64"
    if not (url / "zarr.json").exists():
        pytest.skip(f"{url} not built (make test builds it)")
    store = open_store(str(url))
    meta = store.meta
    assert len(meta.times) == 64 and meta.grid.shape == (64, 64, 64)
    assert all(meta.grid.axis(a).periodic for a in "xyz")
    extra = meta.extra
    assert 30 < extra["re_lambda"] < 100
    assert extra["statistics"]["k_max_eta"] > 0.8  # resolved small scales
    spectrum = np.array(extra["energy_spectrum"]["E"])
    assert spectrum.size == 22 and np.all(spectrum[1:] > 0)
    # Broadband: energy spread over two decades in k, falling roughly like k^(-5/3) in between.
    assert spectrum[16] / spectrum[1] > 1e-4
    slope = np.polyfit(np.log(np.arange(3, 9)), np.log(spectrum[3:9]), 1)[0]
    assert -2.6 < slope < -1.0
    for t in (0, 31, 63):
        u = store.read_box("velocity", t, slice(None), slice(None), slice(None))
        assert u.dtype == np.float32
        assert spectral_divergence_ratio(u) < 1e-5
    store.close()


def test_built_isotropic64_dissipation_uses_its_stored_viscosity(demo_data):
    """`operator="dissipation"` on the demo equals 2 nu S_ij S_ij from the gradient, with nu from the metadata."""
    import labservice

    ds = labservice.open_dataset(str(demo_data / "isotropic64"))
    nu = float(ds.meta.extra["viscosity"])
    pts = np.random.default_rng(3).uniform(0, 2 * np.pi, (200, 3))
    eps = ds.points("velocity", pts, time=7.0, operator="dissipation")
    g = ds.points("velocity", pts, time=7.0, operator="gradient")  # (N, 3 components, 3 derivatives)
    s = 0.5 * (g + np.swapaxes(g, 1, 2))
    expected = 2 * nu * np.einsum("nij,nij->n", s, s)
    np.testing.assert_allclose(np.reshape(eps, -1), expected, rtol=1e-10)
    assert expected.mean() > 0
