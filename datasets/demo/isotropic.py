"""A forced isotropic turbulence DNS: pseudo-spectral Navier-Stokes in a periodic 2*pi box.

The solver advances the Fourier coefficients of the velocity in rotational form,

    du/dt = P[u x omega] - nu k^2 u + f,

where ``P`` projects onto divergence-free fields, products are formed on the grid and truncated by the
2/3 rule, ``f`` is a constant-power forcing of the modes with ``0 < |k| <= k_force`` (it injects exactly
``epsilon`` per unit time) and time stepping is the three-stage strong-stability-preserving Runge-Kutta
scheme with a CFL-limited step. Pressure comes from the Poisson equation in spectral space.

:func:`write_isotropic_run` runs the DNS past its transient and writes one HDF5 file per snapshot plus an
ingest descriptor, so the demo dataset is built through the same path a user's simulation output takes.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numba
import numpy as np
import yaml

from labservice.datasets.demo.descriptor import flow_descriptor

# Reference viscosity at 64^3: gives k_max * eta ~ 1 at epsilon = 0.1. It scales as N^(-4/3) so that
# finer grids resolve the same k_max * eta at a higher Reynolds number.
NU_64 = 0.008
# Mean kinetic energy of the initial field: close to the stationary value at epsilon = 0.1, so the
# transient only has to build the cascade's phase correlations, not the energy.
ENERGY_0 = 0.5


@numba.njit(cache=True, parallel=True)
def _curl_hat(uh, kx, ky, kz, out):  # pragma: no cover - compiled
    """Fourier coefficients of the vorticity, ``i k x uh``."""
    _, nz, ny, nxh = uh.shape
    for iz in numba.prange(nz):
        for iy in range(ny):
            for ix in range(nxh):
                a, b, c = uh[0, iz, iy, ix], uh[1, iz, iy, ix], uh[2, iz, iy, ix]
                out[0, iz, iy, ix] = 1j * (ky[iy] * c - kz[iz] * b)
                out[1, iz, iy, ix] = 1j * (kz[iz] * a - kx[ix] * c)
                out[2, iz, iy, ix] = 1j * (kx[ix] * b - ky[iy] * a)


@numba.njit(cache=True, parallel=True)
def _cross(u, w, out):  # pragma: no cover - compiled
    """``out = u x w`` on the grid; returns max(|ux| + |uy| + |uz|) for the Courant limit."""
    nz = u.shape[1]
    speed = np.zeros(nz)
    for iz in numba.prange(nz):
        m = 0.0
        for iy in range(u.shape[2]):
            for ix in range(u.shape[3]):
                a, b, c = u[0, iz, iy, ix], u[1, iz, iy, ix], u[2, iz, iy, ix]
                p, q, r = w[0, iz, iy, ix], w[1, iz, iy, ix], w[2, iz, iy, ix]
                out[0, iz, iy, ix] = b * r - c * q
                out[1, iz, iy, ix] = c * p - a * r
                out[2, iz, iy, ix] = a * q - b * p
                m = max(m, abs(a) + abs(b) + abs(c))
        speed[iz] = m
    return speed.max()


@numba.njit(cache=True, parallel=True)
def _assemble(nlh, uh, kx, ky, kz, nu, cut, force_coef, k_force2, out):  # pragma: no cover - compiled
    """``out = P[dealias(nlh)] - nu k^2 uh + f``: projection, 2/3 truncation, viscosity and forcing."""
    _, nz, ny, nxh = uh.shape
    for iz in numba.prange(nz):
        for iy in range(ny):
            for ix in range(nxh):
                k2 = kx[ix] ** 2 + ky[iy] ** 2 + kz[iz] ** 2
                keep = abs(kx[ix]) < cut and abs(ky[iy]) < cut and abs(kz[iz]) < cut and k2 > 0
                f = force_coef if k2 <= k_force2 else 0.0
                for c in range(3):
                    out[c, iz, iy, ix] = (f - nu * k2) * uh[c, iz, iy, ix]
                if keep:
                    a, b, d = nlh[0, iz, iy, ix], nlh[1, iz, iy, ix], nlh[2, iz, iy, ix]
                    div = (kx[ix] * a + ky[iy] * b + kz[iz] * d) / k2
                    out[0, iz, iy, ix] += a - kx[ix] * div
                    out[1, iz, iy, ix] += b - ky[iy] * div
                    out[2, iz, iy, ix] += d - kz[iz] * div


@dataclass(frozen=True)
class DNSConfig:
    """Parameters of a forced isotropic run.

    Parameters
    ----------
    n : int
        Grid points per axis.
    nu : float or None
        Kinematic viscosity; None scales ``NU_64`` as ``(64 / n) ** (4/3)``.
    epsilon : float
        Power injected by the forcing, which equals the mean dissipation once stationary.
    k_force : float
        Modes with ``0 < |k| <= k_force`` are forced.
    cfl : float
        Courant number ``dt * max(|ux| + |uy| + |uz|) / dx``.
    seed : int
        Seed of the random initial field.
    transient : float
        Simulated time of the spin-up run on the half-resolution grid (cheap: 1/16 of the cost).
    settle : float
        Simulated time run on the full grid after refinement, before the first snapshot, so the
        smallest scales come to equilibrium.
    interval : float
        Simulated time between stored snapshots.
    snapshots : int
        Number of stored snapshots.
    """

    n: int = 64
    nu: float | None = None
    epsilon: float = 0.1
    k_force: float = 2.0
    cfl: float = 0.8
    seed: int = 2024
    transient: float = 5.0
    settle: float = 1.0
    interval: float = 0.05
    snapshots: int = 64

    @property
    def viscosity(self) -> float:
        return self.nu if self.nu is not None else NU_64 * (64.0 / self.n) ** (4.0 / 3.0)


class SpectralNS:
    """State and operators of the pseudo-spectral solver.

    Velocity coefficients ``uh`` have shape (3, n, n, n//2 + 1): component (x, y, z), then wavenumbers
    along array axes (z, y, x), the last one halved by the real FFT. Coefficients are normalised so that
    ``u(x) = sum_k uh(k) exp(i k.x)`` (numpy's ``norm="forward"``).
    """

    def __init__(self, n: int, nu: float, epsilon: float, k_force: float = 2.0) -> None:
        self.n = n
        self.nu = nu
        self.epsilon = epsilon
        k = np.fft.fftfreq(n, 1.0 / n)
        self.kz = k[:, None, None]
        self.ky = k[None, :, None]
        self.kx = np.fft.rfftfreq(n, 1.0 / n)[None, None, :]
        self.k2 = self.kx**2 + self.ky**2 + self.kz**2
        self.inv_k2 = np.where(self.k2 > 0, 1.0 / np.where(self.k2 > 0, self.k2, 1.0), 0.0)
        kmag = np.sqrt(self.k2)
        # 2/3 rule: keep |k_i| < n/3 along every axis, which removes all quadratic aliases.
        cut = n / 3.0
        self.dealias = (np.abs(self.kx) < cut) & (np.abs(self.ky) < cut) & (np.abs(self.kz) < cut)
        self.k_max = float(np.ceil(cut) - 1)  # largest whole wavenumber kept on every axis
        self.k_force = k_force
        self.forced = (kmag > 0) & (kmag <= k_force + 1e-9)
        # The forced modes are few: keep their indices to sum their energy cheaply every stage.
        self._fsel = np.nonzero(np.broadcast_to(self.forced, self.k2.shape))
        self._k1d = (self.kx.ravel().copy(), self.ky.ravel().copy(), self.kz.ravel().copy())
        # The half spectrum stores kx >= 0 only; interior kx planes stand for their conjugates too.
        w = np.full(self.kx.shape, 2.0)
        w[..., 0] = 1.0
        if n % 2 == 0:
            w[..., -1] = 1.0
        self.weight = np.broadcast_to(w, self.k2.shape)
        self.shell = np.rint(kmag).astype(np.int64)
        self.uh = np.zeros((3, n, n, n // 2 + 1), dtype=np.complex128)
        self.time = 0.0
        self.speed_max = 0.0  # max(|ux| + |uy| + |uz|) at the start of the last step
        self._last_speed = 0.0  # the same, seen by the last right-hand-side evaluation

    # -- transforms ---------------------------------------------------------------------------------
    def to_physical(self, fh: np.ndarray) -> np.ndarray:
        axes = tuple(range(fh.ndim - 3, fh.ndim))
        return np.fft.irfftn(fh, s=(self.n,) * 3, axes=axes, norm="forward")

    def to_spectral(self, f: np.ndarray) -> np.ndarray:
        axes = tuple(range(f.ndim - 3, f.ndim))
        return np.fft.rfftn(f, axes=axes, norm="forward")

    def project(self, fh: np.ndarray) -> np.ndarray:
        """Remove the compressive part: ``f - k (k.f) / k^2``."""
        div = (self.kx * fh[0] + self.ky * fh[1] + self.kz * fh[2]) * self.inv_k2
        return np.stack([fh[0] - self.kx * div, fh[1] - self.ky * div, fh[2] - self.kz * div])

    # -- initial condition --------------------------------------------------------------------------
    def randomize(self, seed: int, energy: float = ENERGY_0) -> None:
        """A random solenoidal field with a broadband spectrum ``k^(-5/3) exp(-(2k/k_max)^2)``.

        The shape is close to the stationary spectrum of the forced run; the amplitude gives the mean
        kinetic energy ``energy``.
        """
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((3, self.n, self.n, self.n))
        uh = self.project(self.to_spectral(noise)) * self.dealias
        have = np.bincount(self.shell.ravel(), (0.5 * self.weight * np.sum(np.abs(uh) ** 2, 0)).ravel())
        k = np.arange(have.size, dtype=float)
        want = np.zeros_like(have)
        want[1:] = k[1:] ** (-5.0 / 3.0) * np.exp(-((k[1:] / (0.5 * self.k_max)) ** 2))
        # Rescale every shell to the target spectrum.
        ratio = np.where(have > 0, want / np.where(have > 0, have, 1.0), 0.0)[self.shell]
        uh = uh * np.sqrt(ratio)
        self.uh = uh * np.sqrt(energy / (0.5 * np.sum(self.weight * np.abs(uh) ** 2)))

    # -- dynamics -----------------------------------------------------------------------------------
    def rhs(self, uh: np.ndarray) -> np.ndarray:
        """Time derivative of the coefficients: projected nonlinear term, viscous term and forcing."""
        k = self._k1d
        wh = np.empty_like(uh)
        _curl_hat(uh, *k, wh)
        u = self.to_physical(uh)
        cross = np.empty_like(u)
        self._last_speed = _cross(u, self.to_physical(wh), cross)
        out = np.empty_like(uh)
        _assemble(
            self.to_spectral(cross),
            uh,
            *k,
            self.nu,
            self.n / 3.0,
            self._force_coef(uh),
            self.k_force**2 + 1e-9,
            out,
        )
        return out

    def _force_coef(self, uh: np.ndarray) -> float:
        e_forced = 0.5 * float(np.sum(self.weight[self._fsel] * np.abs(uh[(slice(None), *self._fsel)]) ** 2))
        return self.epsilon / (2.0 * e_forced) if e_forced > 0 else 0.0

    def forcing(self, uh: np.ndarray) -> np.ndarray:
        """Constant-power forcing: ``f = epsilon / (2 E_f) u`` on the forced modes, so ``<u.f> = epsilon``."""
        return self._force_coef(uh) * self.forced * uh

    def step(self, dt: float) -> None:
        """One SSP-RK3 step (Shu and Osher)."""
        u0 = self.uh
        u1 = u0 + dt * self.rhs(u0)
        self.speed_max = self._last_speed
        u2 = 0.75 * u0 + 0.25 * (u1 + dt * self.rhs(u1))
        self.uh = u0 / 3.0 + (2.0 / 3.0) * (u2 + dt * self.rhs(u2))
        self.time += dt

    def cfl_dt(self, cfl: float) -> float:
        """Largest step allowed by the Courant number ``cfl`` for the current velocity."""
        # The speed seen by the last step's first stage is current enough and costs no extra FFTs.
        speed = self.speed_max or float(np.max(np.sum(np.abs(self.velocity()), axis=0)))
        return cfl * (2 * np.pi / self.n) / max(speed, 1e-12)

    # -- diagnostics --------------------------------------------------------------------------------
    def velocity(self) -> np.ndarray:
        """Velocity on the grid, shape (3, nz, ny, nx), float64."""
        return self.to_physical(self.uh)

    def pressure(self) -> np.ndarray:
        """Kinematic pressure with zero mean from ``lap p = -d_i d_j (u_i u_j)``, shape (nz, ny, nx)."""
        u = self.velocity()
        k = (self.kx, self.ky, self.kz)
        ph = np.zeros(self.uh.shape[1:], dtype=np.complex128)
        for i in range(3):
            for j in range(i, 3):
                factor = 1.0 if i == j else 2.0  # u_i u_j is symmetric: count off-diagonal pairs twice
                ph += factor * k[i] * k[j] * self.to_spectral(u[i] * u[j])
        ph = -ph * self.inv_k2 * self.dealias
        return self.to_physical(ph)

    def energy(self) -> float:
        """Mean kinetic energy ``<|u|^2> / 2``."""
        return float(0.5 * np.sum(self.weight * np.abs(self.uh) ** 2))

    def _dissipation(self, uh: np.ndarray) -> float:
        return float(self.nu * np.sum(self.weight * self.k2 * np.abs(uh) ** 2))

    def dissipation(self) -> float:
        """Mean dissipation rate ``nu <|grad u|^2>``."""
        return self._dissipation(self.uh)

    def injection(self) -> float:
        """Power injected by the forcing, ``<u . f>``."""
        return float(np.sum(self.weight * np.real(np.conj(self.uh) * self.forcing(self.uh))))

    def spectrum(self) -> np.ndarray:
        """Shell-summed energy spectrum E(k) for k = 0 .. k_max (integer shells)."""
        e = np.bincount(self.shell.ravel(), (0.5 * self.weight * np.sum(np.abs(self.uh) ** 2, 0)).ravel())
        return e[: int(self.k_max) + 1]


def turbulence_statistics(nu: float, spectrum: np.ndarray, dissipation: float) -> dict[str, float]:
    """Classical single-point statistics from an energy spectrum and the dissipation rate.

    Parameters
    ----------
    nu : float
        Kinematic viscosity.
    spectrum : ndarray
        E(k) on integer shells k = 0, 1, ...
    dissipation : float
        Mean dissipation rate epsilon.

    Returns
    -------
    dict
        u_rms (per component), taylor_microscale, re_lambda, kolmogorov_length, kolmogorov_time,
        integral_length, large_eddy_turnover_time, energy, dissipation.
    """
    k = np.arange(spectrum.size, dtype=float)
    energy = float(spectrum.sum())
    u_rms = np.sqrt(2.0 * energy / 3.0)
    lam = np.sqrt(15.0 * nu * u_rms**2 / dissipation)
    integral = np.pi / (2.0 * u_rms**2) * float(np.sum(spectrum[1:] / k[1:]))
    return {
        "energy": energy,
        "dissipation": dissipation,
        "u_rms": float(u_rms),
        "taylor_microscale": float(lam),
        "re_lambda": float(u_rms * lam / nu),
        "kolmogorov_length": float((nu**3 / dissipation) ** 0.25),
        "kolmogorov_time": float(np.sqrt(nu / dissipation)),
        "integral_length": float(integral),
        "large_eddy_turnover_time": float(integral / u_rms),
    }


def run_to(solver: SpectralNS, t_end: float, cfl: float, max_steps: int = 100_000) -> int:
    """Advance to exactly ``t_end`` with CFL-limited steps; returns the number of steps taken.

    Each step re-reads the Courant limit and splits the time left into equal steps, so the run lands on
    ``t_end`` without a tiny last step.
    """
    steps = 0
    while t_end - solver.time > 1e-12 * max(1.0, abs(t_end)):
        if steps >= max_steps:
            raise RuntimeError(
                f"the run needs more than {max_steps} steps to reach t={t_end}; it has blown up"
            )
        left = t_end - solver.time
        dt = left / np.ceil(left / solver.cfl_dt(cfl))
        solver.step(dt)
        steps += 1
    solver.time = t_end  # remove round-off so snapshot times are exact
    return steps


def write_isotropic_run(
    raw_dir: Path, dataset_id: str, store_url: str, config: DNSConfig
) -> Generator[str, None, Path]:
    """Run the DNS and write one HDF5 file per snapshot plus ``<dataset_id>.yaml``, the ingest descriptor.

    A generator: it yields progress lines and returns the descriptor's path (``path = yield from ...``).

    Parameters
    ----------
    raw_dir : Path
        Folder for the HDF5 snapshots and the descriptor (created).
    dataset_id : str
        Id of the dataset the descriptor describes.
    store_url : str
        Where the descriptor tells ingest to write the dataset.
    config : DNSConfig
        Run parameters.

    Returns
    -------
    Path
        The descriptor file, written last (its presence means the snapshots are complete).
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    solver = yield from spin_up(config)
    times, spectra, dissipation, energy = [], [], [], []
    t0 = solver.time
    for s in range(config.snapshots):
        if s:
            run_to(solver, t0 + s * config.interval, config.cfl)
        u = solver.velocity().astype(np.float32)
        with h5py.File(raw_dir / f"snap_{s:04d}.h5", "w") as f:
            for name, comp in zip(("u", "v", "w"), u, strict=True):
                f.create_dataset(name, data=comp)  # array order (z, y, x)
            f.create_dataset("p", data=solver.pressure().astype(np.float32))
            f.attrs["time"] = solver.time
        times.append(round(solver.time, 12))
        spectra.append(solver.spectrum())
        dissipation.append(solver.dissipation())
        energy.append(solver.energy())
        if s % 8 == 7 or s == config.snapshots - 1:
            yield (f"  {dataset_id}: wrote snapshot {s + 1}/{config.snapshots} (t={solver.time:.3f})")
    mean_spectrum = np.mean(spectra, axis=0)
    stats = turbulence_statistics(solver.nu, mean_spectrum, float(np.mean(dissipation)))
    stats["k_max_eta"] = float(solver.k_max * stats["kolmogorov_length"])
    yield (
        f"  {dataset_id}: Re_lambda={stats['re_lambda']:.1f}, k_max*eta={stats['k_max_eta']:.2f}, "
        f"u'={stats['u_rms']:.3f}, epsilon={stats['dissipation']:.4f}"
    )
    descriptor = isotropic_descriptor(
        dataset_id, store_url, config, times, stats, mean_spectrum, energy, dissipation
    )
    path = raw_dir / f"{dataset_id}.yaml"
    path.write_text(yaml.safe_dump(descriptor, sort_keys=False))
    return path


def _advance(solver: SpectralNS, span: float, cfl: float, label: str, pieces: int = 4) -> Iterator[str]:
    """Run ``span`` time units in a few pieces, yielding one progress line per piece."""
    start = solver.time
    for i in range(1, pieces + 1):
        steps = run_to(solver, start + span * i / pieces, cfl)
        yield (
            f"  {label} {solver.n}^3: t={solver.time:.2f} ({steps} steps), energy={solver.energy():.4f}, "
            f"dissipation={solver.dissipation():.4f}"
        )


def refine(coarse: SpectralNS, n: int) -> SpectralNS:
    """Carry a state to a finer grid of n^3 points by zero-padding its Fourier coefficients."""
    m = coarse.n
    fine = SpectralNS(n, coarse.nu, coarse.epsilon, coarse.k_force)
    h = m // 2  # coarse modes |k| < m/2 along each axis; the coarse Nyquist plane is dropped
    for zs_c, zs_f in ((slice(0, h), slice(0, h)), (slice(m - h + 1, m), slice(n - h + 1, n))):
        for ys_c, ys_f in ((slice(0, h), slice(0, h)), (slice(m - h + 1, m), slice(n - h + 1, n))):
            fine.uh[:, zs_f, ys_f, :h] = coarse.uh[:, zs_c, ys_c, :h]
    fine.time = coarse.time
    return fine


def spin_up(config: DNSConfig) -> Generator[str, None, SpectralNS]:
    """Bring the flow to statistical equilibrium cheaply.

    The transient runs on a grid of half the resolution (same viscosity and forcing), then the state is
    refined to the full grid and run for ``config.settle`` so the smallest scales fill in. A generator
    of progress lines that returns the solver.
    """
    coarse = SpectralNS(config.n // 2, config.viscosity, config.epsilon, config.k_force)
    coarse.randomize(config.seed)
    yield from _advance(coarse, config.transient, config.cfl, "spin-up")
    solver = refine(coarse, config.n)
    yield from _advance(solver, config.settle, config.cfl, "settle", pieces=2)
    return solver


def isotropic_descriptor(
    dataset_id: str,
    store_url: str,
    config: DNSConfig,
    times: list[float],
    stats: dict[str, float],
    spectrum: np.ndarray,
    energy: list[float],
    dissipation: list[float],
) -> dict[str, Any]:
    """The ingest descriptor of a run written by :func:`write_isotropic_run`."""
    n = config.n
    step = 2 * np.pi / n
    return flow_descriptor(
        dataset_id,
        title=f"Forced isotropic turbulence, {n}^3 DNS",
        description=(
            f"Pseudo-spectral DNS of forced isotropic turbulence in a periodic 2*pi box on {n}^3 points: "
            "rotational form, 2/3 dealiasing, constant-power forcing of |k| <= "
            f"{config.k_force:g}, SSP-RK3 with CFL {config.cfl:g}. Velocity and pressure (kinematic, zero "
            f"mean) every {config.interval:g} time units after a spin-up of {config.transient + config.settle:g}."
        ),
        grid={
            "shape": [n, n, n],
            "x": {"start": 0.0, "step": step},
            "y": {"start": 0.0, "step": step},
            "z": {"start": 0.0, "step": step},
            "periodic": [True, True, True],
        },
        times=times,
        store_url=store_url,
        files="snap_{t:04d}.h5",
        velocity=("L/T", {"datasets": ["/u", "/v", "/w"], "order": "zyx"}),
        pressure=("L^2/T^2", {"datasets": ["/p"], "order": "zyx"}),
        extra={
            "simulation": "forced isotropic turbulence, pseudo-spectral DNS",
            "viscosity": config.viscosity,
            "config": asdict(config),
            "statistics": stats,
            "re_lambda": stats["re_lambda"],
            "energy_spectrum": {"k": list(range(spectrum.size)), "E": [float(e) for e in spectrum]},
            "energy_series": [float(e) for e in energy],
            "dissipation_series": [float(d) for d in dissipation],
        },
    )
