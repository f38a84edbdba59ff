"""Particle tracking: advect points through an interpolated velocity field with RK2 (JHTDB's) or RK4.

The integrator is independent of storage: it calls ``velocity(points, t) -> (N, 3)``. Positions on
periodic axes are kept unwrapped, so trajectories are continuous; the velocity lookup wraps them. A
particle whose next stage would leave a non-periodic axis stops at its last position and is flagged.

One call takes at most :data:`MAX_STEPS` steps. A longer run goes in windows of steps (:func:`segments`),
each call continuing from the previous one's :class:`TrackState`; the windows step through the same time
levels as one run would, so the result is the same bit for bit (particles jobs run this way).
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


def count_steps(t_start: float, t_end: float, dt: float) -> int:
    """Integration steps from t_start to t_end: ceil((t_end - t_start) / dt), to within 1e-9 of a step."""
    if not (np.isfinite(t_start) and np.isfinite(t_end) and np.isfinite(dt)) or dt <= 0 or t_end < t_start:
        raise InvalidInput(f"tracking needs t_start <= t_end and dt > 0; got ({t_start}, {t_end}, {dt})")
    return int(np.ceil((t_end - t_start) / dt - 1e-9))


def step_times(
    t_start: float, t_end: float, dt: float, first: int = 0, last: int | None = None
) -> np.ndarray:
    """Time levels of steps ``first`` to ``last`` (default: all) of t_start, t_start + dt, ..., t_end.

    The last step of the whole run is shortened to land on t_end. Level k is ``t_start + dt * k`` whatever
    window it is asked in, so a run split into windows steps through the very same times.
    """
    nsteps = count_steps(t_start, t_end, dt)
    last = nsteps if last is None else last
    if not 0 <= first <= last <= nsteps:
        raise InvalidInput(f"a window of steps must lie in [0, {nsteps}]; got ({first}, {last})")
    if last - first > MAX_STEPS:
        raise LimitExceeded(
            f"tracking may take at most {MAX_STEPS} steps at once; this asks for {last - first}; raise dt "
            "(or run it as a particles job, which goes in segments)"
        )
    levels = t_start + dt * np.arange(first, last + 1)
    if last == nsteps:
        levels[-1] = t_end
    return levels


def segments(t_start: float, t_end: float, dt: float, max_steps: int | None = None) -> list[tuple[int, int]]:
    """Windows ``(first, last)`` of at most ``max_steps`` (default :data:`MAX_STEPS`) steps covering the run."""
    nsteps = count_steps(t_start, t_end, dt)
    size = max(1, min(max_steps or MAX_STEPS, MAX_STEPS))
    return [(a, min(a + size, nsteps)) for a in range(0, nsteps, size)] or [(0, 0)]


@dataclass
class TrackState:
    """Where a run stands at the end of a window of steps: what the next window continues from."""

    positions: np.ndarray
    left_domain: np.ndarray
    stop_time: np.ndarray


def advect(
    velocity: Callable[[np.ndarray, float], np.ndarray],
    inside: Callable[[np.ndarray], np.ndarray],
    points: np.ndarray,
    t_start: float,
    t_end: float,
    dt: float,
    scheme: str = "rk2",
    every: float | None = None,
    steps: tuple[int, int] | None = None,
    state: TrackState | None = None,
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
    steps : (first, last), optional
        Run only steps ``first`` to ``last`` of the run (see :func:`segments`); ``trajectory`` then
        holds the outputs that fall in the window (the start only in the first window).
    state : TrackState, optional
        The previous window's end (its ``positions``, ``left_domain`` and ``stop_time``); ``points`` is
        then ignored. Windows run one after the other give the same result as one run, bit for bit.
    """
    if scheme not in SCHEMES:
        raise unknown("tracking scheme", scheme, SCHEMES, error=InvalidInput)
    nsteps = count_steps(t_start, t_end, dt)
    first, last = steps if steps is not None else (0, nsteps)
    levels = step_times(t_start, t_end, dt, first, last)
    if state is None:
        x = np.array(points, dtype=np.float64, copy=True)
        active = inside(x)
        left = ~active
        stop = np.full(x.shape[0], float(t_start))
    else:  # a stopped particle stays stopped, though its last position is inside
        x = np.array(state.positions, dtype=np.float64, copy=True)
        left = np.array(state.left_domain, dtype=bool, copy=True)
        active = ~left
        stop = np.array(state.stop_time, dtype=np.float64, copy=True)
    save_every = None
    if every is not None:
        if not np.isfinite(every) or every <= 0:
            raise InvalidInput(f"every must be a positive time interval; got {every}")
        save_every = max(1, int(round(every / dt)))
    out_times = [float(t_start)] if first == 0 else []
    traj = ([x.copy()] if first == 0 else []) if save_every else None
    for s in range(first, last):
        t0, t1 = float(levels[s - first]), float(levels[s + 1 - first])
        if not active.any():  # nothing moves any more: only the outputs of the rest are left
            if save_every:
                rest = np.arange(s + 1, last + 1)
                saved = rest[(rest % save_every == 0) | (rest == nsteps)]
                out_times.extend(float(levels[k - first]) for k in saved)
                traj.extend(x.copy() for _ in saved)  # type: ignore[union-attr]
            break
        h = t1 - t0
        idx = np.nonzero(active)[0]
        xa = x[idx]
        new, ok = _stage(velocity, inside, xa, t0, h, scheme)
        x[idx[ok]] = new[ok]
        stop[idx[ok]] = t1
        stopped = idx[~ok]
        active[stopped] = False
        left[stopped] = True
        if save_every and ((s + 1) % save_every == 0 or s + 1 == nsteps):
            out_times.append(t1)
            traj.append(x.copy())  # type: ignore[union-attr]
    return TrackResult(
        positions=x,
        times=np.array(out_times),
        trajectory=(np.stack(traj) if traj else np.empty((0, *x.shape))) if traj is not None else None,
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
