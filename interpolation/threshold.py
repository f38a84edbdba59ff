"""Threshold queries: every grid node in a box where a scalar exceeds a value (JHTDB's GetThreshold).

The box is scanned slab by slab (bounded memory); at each node the scalar is computed from the stored
field (``norm``, ``value``) or from the velocity gradient by centred differences (``vorticity``
magnitude, ``q_criterion``, ...). Past ``max_points`` matches the query stops with ``LimitExceeded``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labservice.errors import InvalidInput, LimitExceeded, unknown
from labservice.interpolation import derived
from labservice.interpolation.engine import PointEvaluator, RegionSource

SCALARS = ("norm", "value", "vorticity", "q_criterion", "r_invariant", "enstrophy", "dissipation", "lambda2")
DEFAULT_MAX_POINTS = 1_000_000
SLAB_NODES = 1 << 20


@dataclass
class ThresholdResult:
    """Matching nodes: ``indices`` (M, 3) as (ix, iy, iz), ``positions`` (M, 3) x y z, ``values`` (M,)."""

    indices: np.ndarray
    positions: np.ndarray
    values: np.ndarray
    scalar: str
    threshold: float


def _range(spec, axis, name: str) -> np.ndarray:
    """Wrapped node indices of one axis of the box (the cutouts' range syntax and checks)."""
    # imported here: importing labservice.cutout loads its format writers
    from labservice.cutout.region import parse_range

    r = parse_range(spec, name, axis)
    if r.periodic and r.count > r.size:  # a wrapped node would be reported twice
        raise InvalidInput(f"{name} range covers more than the {r.size} nodes of the axis; got {r.as_text()}")
    return r.indices()


def scalar_at(ev: PointEvaluator, t_index: int, points: np.ndarray, scalar: str, nu: float | None) -> np.ndarray:
    """The threshold scalar at ``points`` (nodes) from evaluator ``ev`` (nder 0 for norm/value, else 1)."""
    vals = ev(t_index, points).values
    if scalar == "norm":
        return np.sqrt((vals[..., 0] ** 2).sum(axis=1))
    if scalar == "value":
        return vals[:, 0, 0]
    G = vals[:, :3, :]
    if scalar == "vorticity":
        return np.sqrt((derived.vorticity(G) ** 2).sum(axis=-1))
    return derived.compute(scalar, G, nu)


def threshold(source: RegionSource, variable: str, t_index: int, value: float, x=None, y=None, z=None,
              scalar: str = "norm", spatial: str = "fd4noint", max_points: int = DEFAULT_MAX_POINTS,
              nu: float | None = None) -> ThresholdResult:
    """Nodes in the box ``x``, ``y``, ``z`` (index ranges as for cutouts: ``(start, stop[, step])`` or
    ``"start:stop:step"``, stop exclusive, wrapping on periodic axes; whole axis when None) where
    ``scalar`` >= ``value``.

    Parameters
    ----------
    scalar : str
        ``norm`` (of the variable's components), ``value`` (single-component variables), or a velocity
        gradient quantity: ``vorticity`` (magnitude), ``q_criterion``, ``r_invariant``, ``enstrophy``,
        ``dissipation`` (needs ``nu``), ``lambda2``.
    spatial : str
        Derivative method for gradient quantities (default ``fd4noint``).
    max_points : int
        Raise ``LimitExceeded`` when more nodes than this match.
    """
    meta = source.meta
    if scalar not in SCALARS:
        raise unknown("threshold scalar", scalar, SCALARS, error=InvalidInput)
    ncomp = meta.variables[variable].ncomp if variable in meta.variables else None
    if scalar == "value" and ncomp not in (None, 1):
        raise InvalidInput(f"scalar 'value' needs a one-component variable; {variable!r} has {ncomp}; use 'norm'")
    gradient = scalar not in ("norm", "value")
    if gradient and ncomp not in (None, 3):
        raise InvalidInput(f"scalar {scalar!r} needs a 3-component velocity; {variable!r} has {ncomp}")
    if scalar == "dissipation" and nu is None:
        derived.dissipation(np.zeros((0, 3, 3)), None)  # raises the standard message
    ev = PointEvaluator(source, variable, spatial if gradient else "none", 1 if gradient else 0)
    g = meta.grid
    ix, iy, iz = _range(x, g.x, "x"), _range(y, g.y, "y"), _range(z, g.z, "z")
    cx, cy, cz = g.x.coords(), g.y.coords(), g.z.coords()
    per_slab = max(1, SLAB_NODES // (ix.size * iy.size))
    found_i, found_v = [], []
    count = 0
    for s in range(0, iz.size, per_slab):
        zs = iz[s : s + per_slab]
        Z, Y, X = np.meshgrid(zs, iy, ix, indexing="ij")
        idx = np.stack([X.ravel(), Y.ravel(), Z.ravel()], axis=1)
        pts = np.stack([cx[idx[:, 0]], cy[idx[:, 1]], cz[idx[:, 2]]], axis=1)
        v = scalar_at(ev, t_index, pts, scalar, nu)
        hit = np.nonzero(v >= value)[0]
        count += hit.size
        if count > max_points:
            raise LimitExceeded(
                f"more than {max_points} nodes exceed {scalar} >= {value}; raise the threshold, shrink the box "
                f"or raise max_points"
            )
        found_i.append(idx[hit])
        found_v.append(v[hit])
    indices = np.concatenate(found_i) if found_i else np.zeros((0, 3), dtype=np.int64)
    values = np.concatenate(found_v) if found_v else np.zeros(0)
    positions = np.stack([cx[indices[:, 0]], cy[indices[:, 1]], cz[indices[:, 2]]], axis=1)
    return ThresholdResult(indices, positions, values, scalar, float(value))
