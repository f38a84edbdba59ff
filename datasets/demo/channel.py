"""channel64: a wall-bounded flow with a closed form, on a grid stretched towards the walls.

The velocity is a laminar Poiseuille profile plus a few travelling modes, each the curl of a vector
potential that vanishes to second order at the walls:

    u = U_c (1 - y^2) e_x + sum_m curl[ a_m (1 - y^2)^2 cos(theta_m) e_m ],
    theta_m = k_m . x - omega_m t + phi_m.

Every term is divergence-free (a curl), and every term vanishes at y = -1 and y = 1 (no slip), so exact
values, gradients and the divergence are known everywhere. The pressure is a closed-form sum of travelling
waves. The field is kinematic: it is not a solution of the Navier-Stokes equations, which the tests that use
it do not need.

The grid is periodic in x (length 2*pi) and z (length pi); y runs from wall to wall with
``y_j = tanh(gamma (2 j / (ny - 1) - 1)) / tanh(gamma)``.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from labservice.datasets.demo.descriptor import flow_descriptor

LX = 2 * np.pi
LZ = np.pi

FORMULA = (
    "u = u_center (1 - y^2) e_x + sum_m curl[a_m f(y) cos(theta_m) e_m], f(y) = (1 - y^2)^2, "
    "theta_m = k_m . (x, y, z) - omega_m t + phase_m; written out: "
    "curl[a f cos(theta) e] = a [f'(y) cos(theta) (e_y x e) - f(y) sin(theta) (k x e)]. "
    "p = sum_n b_n cos(k_n . (x, y, z) - omega_n t + phase_n)."
)

# Wavenumbers are whole multiples of 2*pi/LX = 1 in x and 2*pi/LZ = 2 in z, so every mode is periodic.
DEFAULT_PARAMS: dict[str, Any] = {
    "u_center": 1.0,
    "modes": [
        {"amplitude": 0.10, "k": [1.0, 1.5, 0.0], "e": [0.0, 0.0, 1.0], "omega": 0.8, "phase": 0.3},
        {"amplitude": 0.08, "k": [2.0, 0.0, 2.0], "e": [1.0, 0.0, 0.0], "omega": -1.2, "phase": 1.1},
        {"amplitude": 0.06, "k": [0.0, 2.5, 4.0], "e": [0.0, 1.0, 0.0], "omega": 1.5, "phase": 2.0},
        {"amplitude": 0.05, "k": [3.0, 0.5, 6.0], "e": [0.6, 0.0, 0.8], "omega": 2.0, "phase": 4.2},
    ],
    "pressure": [
        {"amplitude": 0.05, "k": [1.0, 1.0, 2.0], "omega": 0.8, "phase": 0.5},
        {"amplitude": 0.02, "k": [2.0, 2.0, 0.0], "omega": -1.2, "phase": 1.7},
    ],
}


def stretched_y(ny: int, gamma: float = 2.0) -> np.ndarray:
    """Wall-clustered coordinates in [-1, 1]: ``tanh(gamma s) / tanh(gamma)`` for s uniform in [-1, 1]."""
    s = np.linspace(-1.0, 1.0, ny)
    y = np.tanh(gamma * s) / np.tanh(gamma)
    y[0], y[-1] = -1.0, 1.0  # exact walls
    return y


def _modes(params: dict[str, Any] | None) -> tuple[float, list[dict[str, Any]], list[dict[str, Any]]]:
    p = DEFAULT_PARAMS if params is None else params
    return float(p["u_center"]), list(p["modes"]), list(p["pressure"])


def _phase(mode: dict[str, Any], x: np.ndarray, y: np.ndarray, z: np.ndarray, t: np.ndarray) -> np.ndarray:
    kx, ky, kz = mode["k"]
    return kx * x + ky * y + kz * z - mode["omega"] * t + mode["phase"]


def channel_velocity(x: Any, y: Any, z: Any, t: Any, params: dict[str, Any] | None = None) -> np.ndarray:
    """Exact velocity of channel64.

    Parameters
    ----------
    x, y, z, t : array_like
        Positions and times; broadcast together.
    params : dict, optional
        The ``extra["params"]`` of the dataset's metadata; default :data:`DEFAULT_PARAMS`.

    Returns
    -------
    ndarray
        Shape ``broadcast(x, y, z, t).shape + (3,)``, float64, components (ux, uy, uz).
    """
    x, y, z, t = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, z, t)))
    u_center, modes, _ = _modes(params)
    out = np.zeros(x.shape + (3,))
    out[..., 0] = u_center * (1.0 - y**2)
    f = (1.0 - y**2) ** 2
    df = -4.0 * y * (1.0 - y**2)
    for m in modes:
        e = np.asarray(m["e"], dtype=float)
        k = np.asarray(m["k"], dtype=float)
        theta = _phase(m, x, y, z, t)
        a = np.cross([0.0, 1.0, 0.0], e)  # e_y x e
        b = np.cross(k, e)
        out += m["amplitude"] * ((df * np.cos(theta))[..., None] * a - (f * np.sin(theta))[..., None] * b)
    return out


def channel_velocity_gradient(
    x: Any, y: Any, z: Any, t: Any, params: dict[str, Any] | None = None
) -> np.ndarray:
    """Exact velocity gradient ``[..., i, j] = d u_i / d x_j`` of channel64 (shape ``... + (3, 3)``)."""
    x, y, z, t = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, z, t)))
    u_center, modes, _ = _modes(params)
    out = np.zeros(x.shape + (3, 3))
    out[..., 0, 1] = -2.0 * u_center * y
    f = (1.0 - y**2) ** 2
    df = -4.0 * y * (1.0 - y**2)
    ddf = -4.0 + 12.0 * y**2
    e_y = np.array([0.0, 1.0, 0.0])
    for m in modes:
        e = np.asarray(m["e"], dtype=float)
        k = np.asarray(m["k"], dtype=float)
        theta = _phase(m, x, y, z, t)
        c, s = np.cos(theta), np.sin(theta)
        a = np.cross(e_y, e)
        b = np.cross(k, e)
        # d/dx_j of [f' cos(theta)] = f'' cos(theta) delta_jy - f' sin(theta) k_j, and likewise for f sin.
        d_first = (ddf * c)[..., None] * e_y - (df * s)[..., None] * k
        d_second = (df * s)[..., None] * e_y + (f * c)[..., None] * k
        out += m["amplitude"] * (a[:, None] * d_first[..., None, :] - b[:, None] * d_second[..., None, :])
    return out


def channel_pressure(x: Any, y: Any, z: Any, t: Any, params: dict[str, Any] | None = None) -> np.ndarray:
    """Exact pressure of channel64, shape ``broadcast(x, y, z, t).shape``, float64."""
    x, y, z, t = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, z, t)))
    _, _, waves = _modes(params)
    out = np.zeros(x.shape)
    for w in waves:
        out += w["amplitude"] * np.cos(_phase(w, x, y, z, t))
    return out


def channel_grid(
    nx: int = 64, ny: int = 65, nz: int = 64, gamma: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node coordinates (x, y, z) of the channel grid."""
    return np.arange(nx) * (LX / nx), stretched_y(ny, gamma), np.arange(nz) * (LZ / nz)


def write_channel_run(
    raw_dir: Path,
    dataset_id: str,
    store_url: str,
    shape: tuple[int, int, int] = (64, 65, 64),
    times: np.ndarray | None = None,
    gamma: float = 2.0,
) -> Generator[str, None, Path]:
    """Write the channel snapshots as HDF5 files plus ``<dataset_id>.yaml``, the ingest descriptor.

    A generator: it yields progress lines and returns the descriptor's path (``path = yield from ...``).

    Velocity goes into one dataset per file with a trailing component axis, in (x, y, z) order, and the
    y coordinates into ``grid.h5:/y``, so the demo exercises those descriptor options.

    Parameters
    ----------
    raw_dir : Path
        Folder for the HDF5 files and the descriptor (created).
    dataset_id : str
        Id of the dataset the descriptor describes.
    store_url : str
        Where the descriptor tells ingest to write the dataset.
    shape : tuple of int
        (nx, ny, nz).
    times : ndarray, optional
        Snapshot times; default 24 times 0.05 apart.
    gamma : float
        Stretching of the y coordinates.

    Returns
    -------
    Path
        The descriptor file.
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    times = np.round(np.arange(24) * 0.05, 12) if times is None else np.asarray(times, dtype=float)
    nx, ny, nz = shape
    x, y, z = channel_grid(nx, ny, nz, gamma)
    with h5py.File(raw_dir / "grid.h5", "w") as f:
        f.create_dataset("x", data=x)
        f.create_dataset("y", data=y)
        f.create_dataset("z", data=z)
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij")  # (nx, ny, nz)
    for i, t in enumerate(times):
        with h5py.File(raw_dir / f"channel_{i:03d}.h5", "w") as f:
            f.create_dataset("velocity", data=channel_velocity(xx, yy, zz, t).astype(np.float32))
            f.create_dataset("p", data=channel_pressure(xx, yy, zz, t).astype(np.float32))
            f.attrs["time"] = t
    yield (f"  {dataset_id}: wrote {len(times)} snapshots of the closed-form channel field")
    descriptor = flow_descriptor(
        dataset_id,
        title=f"Channel flow with a closed form, {nx} x {ny} x {nz}, stretched y",
        description=(
            "Analytic wall-bounded flow: Poiseuille profile plus divergence-free travelling modes that vanish "
            "at the walls y = -1, 1. Periodic in x and z; y clustered at the walls (tanh stretching). "
            "Exact values from labservice.datasets.demo.channel.channel_velocity(x, y, z, t, extra['params'])."
        ),
        grid={
            "shape": [nx, ny, nz],
            "x": {"start": 0.0, "step": LX / nx},
            "y": {"coordinates": "grid.h5:/y"},
            "z": {"start": 0.0, "step": LZ / nz},
            "periodic": [True, False, True],
        },
        times=[float(t) for t in times],
        store_url=store_url,
        files="channel_{t:03d}.h5",
        velocity=("U_c", {"datasets": ["/velocity"], "order": "xyz", "layout": "last"}),
        pressure=("U_c^2", {"datasets": ["/p"], "order": "xyz"}),
        extra={
            "formula": FORMULA,
            "params": DEFAULT_PARAMS,
            "walls": [-1.0, 1.0],
            "stretching": {"kind": "tanh", "gamma": gamma},
            "box": {"lx": LX, "lz": LZ},
            "python": "labservice.datasets.demo.channel.channel_velocity / channel_pressure",
        },
    )
    path = raw_dir / f"{dataset_id}.yaml"
    path.write_text(yaml.safe_dump(descriptor, sort_keys=False))
    return path
