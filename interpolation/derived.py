"""Quantities a fluid dynamicist derives from a velocity gradient, computed for them.

All functions take ``G`` of shape (..., 3, 3) with ``G[..., i, j] = d u_i / d x_j``.
Conventions: S = (G + G^T)/2, Omega = (G - G^T)/2; Q = (|Omega|^2 - |S|^2)/2; R = -det(G);
dissipation = 2 nu S_ij S_ij; enstrophy = |omega|^2 / 2; lambda2 is the middle eigenvalue of
S^2 + Omega^2 (vortex cores where it is negative).
"""

from __future__ import annotations

import numpy as np

from labservice.errors import InvalidInput


def strain_rate(G: np.ndarray) -> np.ndarray:
    """Strain-rate tensor S as (..., 6): xx, xy, xz, yy, yz, zz."""
    S = 0.5 * (G + np.swapaxes(G, -1, -2))
    return np.stack([S[..., 0, 0], S[..., 0, 1], S[..., 0, 2], S[..., 1, 1], S[..., 1, 2], S[..., 2, 2]], -1)


def vorticity(G: np.ndarray) -> np.ndarray:
    """Vorticity (curl of u) as (..., 3)."""
    return np.stack([G[..., 2, 1] - G[..., 1, 2], G[..., 0, 2] - G[..., 2, 0], G[..., 1, 0] - G[..., 0, 1]], -1)


def q_criterion(G: np.ndarray) -> np.ndarray:
    """Second invariant Q = (|Omega|^2 - |S|^2) / 2 = -tr(G G) / 2."""
    return -0.5 * np.einsum("...ij,...ji->...", G, G)


def r_invariant(G: np.ndarray) -> np.ndarray:
    """Third invariant R = -det(G)."""
    return -np.linalg.det(G)


def enstrophy(G: np.ndarray) -> np.ndarray:
    """Enstrophy density |omega|^2 / 2."""
    w = vorticity(G)
    return 0.5 * np.einsum("...i,...i->...", w, w)


def dissipation(G: np.ndarray, nu: float | None) -> np.ndarray:
    """Dissipation rate 2 nu S_ij S_ij; needs the kinematic viscosity ``nu``."""
    if nu is None:
        raise InvalidInput(
            "the dissipation rate needs the kinematic viscosity, but this dataset's metadata has no "
            "extra['nu']; ask for 'strain_rate' instead, or add nu to the dataset metadata"
        )
    S = 0.5 * (G + np.swapaxes(G, -1, -2))
    return 2.0 * float(nu) * np.einsum("...ij,...ij->...", S, S)


def lambda2(G: np.ndarray) -> np.ndarray:
    """Middle eigenvalue of S^2 + Omega^2 (Jeong and Hussain's lambda2)."""
    S = 0.5 * (G + np.swapaxes(G, -1, -2))
    Om = 0.5 * (G - np.swapaxes(G, -1, -2))
    M = S @ S + Om @ Om
    return np.linalg.eigvalsh(M)[..., 1]


# Output column names of each derived quantity (labservice.interpolation.operators.component_names).
DERIVED = {
    "vorticity": ["wx", "wy", "wz"],
    "q_criterion": ["Q"],
    "r_invariant": ["R"],
    "strain_rate": ["Sxx", "Sxy", "Sxz", "Syy", "Syz", "Szz"],
    "dissipation": ["epsilon"],
    "enstrophy": ["enstrophy"],
    "lambda2": ["lambda2"],
}


def compute(name: str, G: np.ndarray, nu: float | None = None) -> np.ndarray:
    """Derived quantity ``name`` from gradients ``G`` (..., 3, 3); scalars come back as (...,)."""
    if name == "dissipation":
        return dissipation(G, nu)
    return {
        "vorticity": vorticity,
        "q_criterion": q_criterion,
        "r_invariant": r_invariant,
        "strain_rate": strain_rate,
        "enstrophy": enstrophy,
        "lambda2": lambda2,
    }[name](G)
