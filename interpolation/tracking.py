"""Particle tracking: advect points through an interpolated velocity field with RK2 (JHTDB's) or RK4.

The integrator is independent of storage: it calls ``velocity(points, t) -> (N, 3)``. Positions on
periodic axes are kept unwrapped, so trajectories are continuous; the velocity lookup wraps them. A
particle whose next stage would leave a non-periodic axis stops at its last position and is flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from labservice.errors import InvalidInput, LimitExceeded, unknown

SCHEMES = ("rk2", "rk4")
MAX_STEPS = 1_000_000


@dataclass
class TrackResult:
    """Result of :func:`advect`.

    Attributes
    ----------
    positions : ndarray (N, 3)
        Final positions (x, y, z); for stopped particles, where they stopped.
    times : ndarray (T,)
        Output times of ``trajectory`` (t_start, then every ``every``, and t_end).
    trajectory : ndarray (T, N, 3) or None
        Positions at ``times`` when an output interval was asked for.
    left_domain : ndarray (N,) bool
        Particles that hit a non-periodic boundary and stopped.
    stop_time : ndarray (N,)
        The time each particle reached (t_end unless it stopped).
    """

    positions: np.ndarray
    times: np.ndarray
    trajectory: np.ndarray | None
    left_domain: np.ndarray
    stop_time: np.ndarray


def step_times(t_start: float, t_end: float, dt: float) -> np.ndarray:
    """Time levels t_start, t_start + dt, ..., t_end (the last step shortened to land on t_end)."""
    if not (np.isfinite(t_start) and np.isfinite(t_end) and np.isfinite(dt)) or dt <= 0 or t_end < t_start:
        raise InvalidInput(f"tracking needs t_start <= t_end and dt > 0; got ({t_start}, {t_end}, {dt})")
    nsteps = int(np.ceil((t_end - t_start) / dt - 1e-9))
    if nsteps > MAX_STEPS:
        raise LimitExceeded(f"tracking may take at most {MAX_STEPS} steps; this asks for {nsteps}; raise dt")
    levels = t_start + dt * np.arange(nsteps + 1)
    levels[-1] = t_end
    return levels


def advect(
    velocity: Callable[[np.ndarray, float], np.ndarray],
    inside: Callable[[np.ndarray], np.ndarray],
    points: np.ndarray,
    t_start: float,
    t_end: float,
    dt: float,
    scheme: str = "rk2",
    every: float | None = None,
) -> TrackResult:
    """Integrate dx/dt = u(x, t) from t_start to t_end.

    Parameters
    ----------
    velocity : callable
        ``velocity(points (M, 3), t) -> (M, 3)``.
    inside : callable
        ``inside(points (M, 3)) -> (M,) bool``, False for points outside a non-periodic axis.
    points : ndarray (N, 3)
    t_start, t_end, dt : float
        dt > 0; the last step is shortened to end exactly at t_end.
    scheme : {"rk2", "rk4"}
        ``rk2`` is Heun's method (JHTDB's GetPosition); ``rk4`` the classical fourth-order scheme.
    every : float, optional
        Also return positions every ``every`` time units (rounded to whole steps).
    """
    if scheme not in SCHEMES:
        raise unknown("tracking scheme", scheme, SCHEMES, error=InvalidInput)
    x = np.array(points, dtype=np.float64, copy=True)
    levels = step_times(t_start, t_end, dt)
    n = x.shape[0]
    active = inside(x)
    left = ~active
    stop = np.full(n, float(t_start))
    save_every = None
    if every is not None:
        if not np.isfinite(every) or every <= 0:
            raise InvalidInput(f"every must be a positive time interval; got {every}")
        save_every = max(1, int(round(every / dt)))
    out_times = [float(t_start)]
    traj = [x.copy()] if save_every else None
    for s in range(levels.size - 1):
        t0, t1 = float(levels[s]), float(levels[s + 1])
        h = t1 - t0
        idx = np.nonzero(active)[0]
        if idx.size:
            xa = x[idx]
            new, ok = _stage(velocity, inside, xa, t0, h, scheme)
            x[idx[ok]] = new[ok]
            stop[idx[ok]] = t1
            stopped = idx[~ok]
            active[stopped] = False
            left[stopped] = True
        if save_every and ((s + 1) % save_every == 0 or s + 1 == levels.size - 1):
            out_times.append(t1)
            traj.append(x.copy())  # type: ignore[union-attr]
    return TrackResult(
        positions=x,
        times=np.array(out_times),
        trajectory=np.stack(traj) if traj is not None else None,
        left_domain=left,
        stop_time=stop,
    )


def _stage(velocity, inside, x: np.ndarray, t: float, h: float, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """One step for the active particles; returns the new positions and which stayed inside."""
    ok = np.ones(x.shape[0], dtype=bool)

    def u(p: np.ndarray, tt: float) -> np.ndarray:
        # evaluate only where still inside; others keep zero velocity and are dropped below
        ok[:] &= inside(p)
        v = np.zeros_like(p)
        if ok.any():
            v[ok] = velocity(p[ok], tt)
        return v

    if scheme == "rk2":
        k1 = u(x, t)
        k2 = u(x + h * k1, t + h)
        new = x + 0.5 * h * (k1 + k2)
    else:
        k1 = u(x, t)
        k2 = u(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = u(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = u(x + h * k3, t + h)
        new = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    ok &= inside(new)
    return new, ok
