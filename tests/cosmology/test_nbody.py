"""The N-body code against linear theory: IC power, growth of a plane wave, momentum conservation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from labservice.datasets.demo import nbody as nb

COSMO = nb.Cosmology()


def test_growth_factor_limits():
    # Matter domination early: D grows like a and f = 1; today f ~ Omega_m^0.55 (Linder) to 1%.
    d = nb.growth_factor(np.array([0.01, 0.02]), COSMO)
    assert d[1] / d[0] == pytest.approx(2.0, rel=1e-3)
    assert nb.growth_factor(1.0, COSMO)[0] == pytest.approx(1.0)
    assert nb.growth_rate(0.01, COSMO)[0] == pytest.approx(1.0, rel=1e-3)
    assert nb.growth_rate(1.0, COSMO)[0] == pytest.approx(COSMO.omega_m**0.55, rel=0.01)


def test_power_normalised_to_sigma8():
    assert nb.sigma_r(8.0, COSMO) == pytest.approx(COSMO.sigma8, rel=1e-6)


def _binned_power(delta_k, n, box, nbins=8):
    kx, ky, kz = nb.wavevectors(n, box)
    k = np.sqrt(kx**2 + ky**2 + kz**2).ravel()
    p = (np.abs(delta_k) ** 2).ravel() * box**3
    # Count only the rfft half-space's independent modes (kz > 0 plane; kz = 0 counted once per pair is fine here).
    edges = np.linspace(2 * np.pi / box, np.pi * n / box / 2, nbins + 1)
    which = np.digitize(k, edges) - 1
    ok = (which >= 0) & (which < nbins)
    counts = np.bincount(which[ok], minlength=nbins)
    mean_p = np.bincount(which[ok], p[ok], minlength=nbins) / counts
    mean_k = np.bincount(which[ok], k[ok], minlength=nbins) / counts
    return mean_k, mean_p, counts


def test_initial_power_spectrum_matches_input():
    n, box = 32, 100.0
    delta_k = nb.linear_density_field(n, box, COSMO, seed=3)
    k, p, counts = _binned_power(delta_k, n, box)
    expected = np.array([nb.linear_power(np.array([kk]), COSMO)[0] for kk in k])
    # |delta_k|^2 is exponential: the bin mean has relative error 1/sqrt(modes); allow 4 sigma plus the bin width.
    tolerance = 4 / np.sqrt(counts) + 0.05
    assert np.all(np.abs(p / expected - 1) < tolerance), (p / expected, tolerance)


def test_zeldovich_particles_carry_the_linear_power():
    n, box, a = 32, 100.0, 0.02
    pos, mom, delta_k = nb.zeldovich(n, box, a, COSMO, seed=3)
    delta = nb.density_contrast(pos, n, box)
    measured_k = scipy.fft.rfftn(delta) / n**3
    k, p_meas, counts = _binned_power(measured_k, n, box, nbins=4)
    _, p_lin, _ = _binned_power(delta_k, n, box, nbins=4)
    d = nb.growth_factor(a, COSMO)[0]
    # Same realisation, so no cosmic variance: low-k power equals D^2 P_lin up to CIC smoothing (< 10%).
    ratio = p_meas / (d**2 * p_lin)
    assert np.all(np.abs(ratio[:2] - 1) < 0.1), ratio
    # The ICs start with zero net momentum.
    assert np.abs(nb.total_momentum(mom)).max() < 1e-10 * np.abs(mom).sum()


def test_plane_wave_grows_like_linear_theory():
    # A plane wave is an exact Zel'dovich solution until shell crossing: its amplitude must follow D(a)
    # (to 2%: CIC smoothing on a 32^3 mesh slows the growth of the fundamental mode by about 1%).
    n, box, a0 = 32, 100.0, 0.02
    q = (np.arange(n) + 0.5) * box / n
    lattice = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    k = 2 * np.pi / box
    psi = np.zeros_like(lattice)
    psi[:, 0] = 0.5 * np.sin(k * lattice[:, 0])
    d0, f0 = nb.growth_factor(a0, COSMO)[0], nb.growth_rate(a0, COSMO)[0]
    pos = np.mod(lattice + d0 * psi, box)
    mom = a0**2 * f0 * d0 * COSMO.E(a0) * psi
    force = nb.PMForce(n, box, COSMO.omega_m)
    outputs = {0.25, 1.0}
    bounds = nb.step_boundaries(a0, np.array(sorted(outputs)))
    acc = force(pos)
    for a_lo, a_hi in zip(bounds[:-1], bounds[1:], strict=True):
        mid = 0.5 * (a_lo + a_hi)
        mom += acc * nb._kick(a_lo, mid, COSMO)
        pos = np.mod(pos + mom * nb._drift(a_lo, a_hi, COSMO), box)
        acc = force(pos)
        mom += acc * nb._kick(mid, a_hi, COSMO)
        if min(abs(a_hi - o) for o in outputs) < 1e-12:
            disp = (pos[:, 0] - lattice[:, 0] + box / 2) % box - box / 2
            s = np.sin(k * lattice[:, 0])
            amplitude = (disp * s).sum() / (s * s).sum() / 0.5
            assert amplitude == pytest.approx(nb.growth_factor(a_hi, COSMO)[0], rel=0.02)


def test_run_conserves_momentum_and_tracks_low_k_growth():
    config = nb.RunConfig(n=16, seed=5, z_init=49.0)
    outputs = np.array([0.02, 0.1, 0.3])
    snaps = list(nb.run_pm(config, outputs))
    assert [s.index for s in snaps] == [0, 1, 2]
    first = None
    for s in snaps:
        mom = s.vel.astype(np.float64) * s.a**1.5 / nb.VELOCITY_UNIT_KMS
        assert np.abs(nb.total_momentum(mom)).max() < 1e-5 * np.abs(mom).sum()
        dk = scipy.fft.rfftn(nb.density_contrast(s.pos.astype(np.float64), 16, config.box))
        modes = np.array([dk[1, 0, 0], dk[0, 1, 0], dk[0, 0, 1]])
        if first is None:
            first = (s.a, modes)
            continue
        growth = nb.growth_factor(s.a, COSMO)[0] / nb.growth_factor(first[0], COSMO)[0]
        np.testing.assert_allclose(np.abs(modes / first[1]), growth, rtol=0.05)
