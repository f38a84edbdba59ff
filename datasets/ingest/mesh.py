"""Particle-mesh operations on a periodic box: cloud-in-cell deposit and interpolation, density contrast,
FFT wavevectors, and the physical constants in the code's units (Mpc/h, Msun/h, km/s).

Shared by the N-body ingest (density field, halo environment, FOF halo properties) and the demo PM code.
"""

from __future__ import annotations

import numba
import numpy as np

RHO_CRIT0 = 2.775366e11  # critical density today in (Msun/h) / (Mpc/h)^3
G_MPC_KMS2_MSUN = 4.30091727e-9  # Newton's constant in Mpc (km/s)^2 / Msun


@numba.njit(cache=True, inline="always")
def _cic_cell(x: float, y: float, z: float, scale: float, ngrid: int):
    """The lower and upper periodic mesh indices around a point and its fractional offsets (dx, dy, dz)."""
    fx = x * scale
    fy = y * scale
    fz = z * scale
    ix = int(np.floor(fx))
    iy = int(np.floor(fy))
    iz = int(np.floor(fz))
    ix0 = ix % ngrid
    iy0 = iy % ngrid
    iz0 = iz % ngrid
    return ix0, iy0, iz0, (ix0 + 1) % ngrid, (iy0 + 1) % ngrid, (iz0 + 1) % ngrid, fx - ix, fy - iy, fz - iz


@numba.njit(cache=True)
def cic_deposit(pos: np.ndarray, ngrid: int, box: float) -> np.ndarray:
    """Cloud-in-cell particle counts on an ngrid^3 periodic mesh (array order [x, y, z], node i at i*box/n)."""
    rho = np.zeros((ngrid, ngrid, ngrid), dtype=np.float64)
    scale = ngrid / box
    for p in range(pos.shape[0]):
        ix0, iy0, iz0, ix1, iy1, iz1, dx, dy, dz = _cic_cell(pos[p, 0], pos[p, 1], pos[p, 2], scale, ngrid)
        rho[ix0, iy0, iz0] += (1 - dx) * (1 - dy) * (1 - dz)
        rho[ix1, iy0, iz0] += dx * (1 - dy) * (1 - dz)
        rho[ix0, iy1, iz0] += (1 - dx) * dy * (1 - dz)
        rho[ix0, iy0, iz1] += (1 - dx) * (1 - dy) * dz
        rho[ix1, iy1, iz0] += dx * dy * (1 - dz)
        rho[ix1, iy0, iz1] += dx * (1 - dy) * dz
        rho[ix0, iy1, iz1] += (1 - dx) * dy * dz
        rho[ix1, iy1, iz1] += dx * dy * dz
    return rho


@numba.njit(cache=True, parallel=True)
def cic_interpolate(field: np.ndarray, pos: np.ndarray, box: float) -> np.ndarray:
    """Cloud-in-cell interpolation of a mesh field [x, y, z, c] at particle positions (the transpose of deposit)."""
    ngrid = field.shape[0]
    nc = field.shape[3]
    out = np.empty((pos.shape[0], nc), dtype=np.float64)
    scale = ngrid / box
    for p in numba.prange(pos.shape[0]):
        ix0, iy0, iz0, ix1, iy1, iz1, dx, dy, dz = _cic_cell(pos[p, 0], pos[p, 1], pos[p, 2], scale, ngrid)
        for c in range(nc):
            out[p, c] = (
                field[ix0, iy0, iz0, c] * (1 - dx) * (1 - dy) * (1 - dz)
                + field[ix1, iy0, iz0, c] * dx * (1 - dy) * (1 - dz)
                + field[ix0, iy1, iz0, c] * (1 - dx) * dy * (1 - dz)
                + field[ix0, iy0, iz1, c] * (1 - dx) * (1 - dy) * dz
                + field[ix1, iy1, iz0, c] * dx * dy * (1 - dz)
                + field[ix1, iy0, iz1, c] * dx * (1 - dy) * dz
                + field[ix0, iy1, iz1, c] * (1 - dx) * dy * dz
                + field[ix1, iy1, iz1, c] * dx * dy * dz
            )
    return out


def density_contrast(pos: np.ndarray, ngrid: int, box: float) -> np.ndarray:
    """delta = rho / mean - 1 on an ngrid^3 mesh, array order [x, y, z]."""
    counts = cic_deposit(np.ascontiguousarray(pos, dtype=np.float64), ngrid, box)
    return counts * (ngrid**3 / pos.shape[0]) - 1.0


def wavevectors(ngrid: int, box: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable kx, ky, kz (h/Mpc) of an rfftn of an ngrid^3 mesh."""
    k = 2 * np.pi * np.fft.fftfreq(ngrid, d=box / ngrid)
    kz = 2 * np.pi * np.fft.rfftfreq(ngrid, d=box / ngrid)
    return k[:, None, None], k[None, :, None], kz[None, None, :]
