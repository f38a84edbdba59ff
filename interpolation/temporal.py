"""Temporal interpolation as fixed linear combinations of stored time steps.

Every temporal method (``none``, ``linear``, ``pchip``) gives the value at time t as a weighted sum of a
few stored time steps, with weights that depend only on the stored times. So a query for T times needs
the spatial interpolation once per *distinct* stored step, never once per requested time:
:func:`time_weight_matrix` lists those steps and the (T, K) weights that combine them.

``pchip`` is JHTDB's 4-point cubic Hermite: on [t1, t2] with end values f1, f2 and centred slopes
``d1 = ((f2 - f1)/(t2 - t1) + (f1 - f0)/(t1 - t0)) / 2`` and
``d2 = ((f3 - f2)/(t3 - t2) + (f2 - f1)/(t2 - t1)) / 2``. In the first and last stored interval, where
f0 or f3 does not exist, the missing half of the slope is dropped (the one-sided slope (f2 - f1)/(t2 - t1)).
"""

from __future__ import annotations

import math

import numpy as np

from labservice.errors import InvalidInput, LimitExceeded, OutOfDomain, unknown

TEMPORAL_METHODS = ("none", "linear", "pchip")
MAX_SERIES = 100_000  # times in one series (or positions kept per particle); a guard against a mistyped step
# Counts past this are refused by every limit anyway; capping keeps int() finite for tiny steps.
_HUGE_COUNT = 10**15


def _check_time(times: np.ndarray, t: float) -> None:
    if not np.isfinite(t) or t < times[0] or t > times[-1]:
        raise OutOfDomain(f"time must be in [{times[0]:.6g}, {times[-1]:.6g}] (the stored range); got {t!r}")


def time_weights(times, t: float, method: str = "none") -> dict[int, float]:
    """Stored-step weights ``{index: weight}`` giving the value at time ``t``.

    Parameters
    ----------
    times : array_like
        The stored times, strictly increasing.
    t : float
        The requested time, inside ``[times[0], times[-1]]``.
    method : {"none", "linear", "pchip"}
    """
    times = np.asarray(times, dtype=np.float64)
    if method not in TEMPORAL_METHODS:
        raise unknown("temporal method", method, TEMPORAL_METHODS, error=InvalidInput)
    t = float(t)
    _check_time(times, t)
    n = times.size
    # exact hits need no interpolation, whatever the method
    k = int(np.searchsorted(times, t))
    if k < n and times[k] == t:
        return {k: 1.0}
    i = k - 1  # times[i] < t < times[i + 1]
    if method == "none":
        return {i: 1.0} if t - times[i] <= times[i + 1] - t else {i + 1: 1.0}
    t1, t2 = times[i], times[i + 1]
    h = t2 - t1
    s = (t - t1) / h
    if method == "linear":
        return {i: 1.0 - s, i + 1: s}
    h00 = 2 * s**3 - 3 * s**2 + 1
    h10 = s**3 - 2 * s**2 + s
    h01 = -2 * s**3 + 3 * s**2
    h11 = s**3 - s**2
    w: dict[int, float] = {i: h00, i + 1: h01}

    def add(j: int, c: float) -> None:
        w[j] = w.get(j, 0.0) + c

    # d1 = (f2 - f1)/h12 / 2 + (f1 - f0)/h01 / 2, or the one-sided (f2 - f1)/h12 without f0
    half = 0.5 if i >= 1 else 1.0
    add(i + 1, h10 * h * half / h)
    add(i, -h10 * h * half / h)
    if i >= 1:
        h0 = t1 - times[i - 1]
        add(i, h10 * h * 0.5 / h0)
        add(i - 1, -h10 * h * 0.5 / h0)
    half = 0.5 if i + 2 < n else 1.0
    add(i + 1, h11 * h * half / h)
    add(i, -h11 * h * half / h)
    if i + 2 < n:
        h3 = times[i + 2] - t2
        add(i + 2, h11 * h * 0.5 / h3)
        add(i + 1, -h11 * h * 0.5 / h3)
    return w


def steps_in(span: float, step: float) -> int:
    """floor(|span| / step), to within 1e-9 of a step; capped at 10**15 so that a tiny step cannot overflow.

    The one rounding rule for "how many steps fit": series lengths, output counts, integration steps.
    """
    ratio = abs(span) / step
    if not math.isfinite(ratio) or ratio > _HUGE_COUNT:
        return _HUGE_COUNT
    return int(math.floor(ratio + 1e-9))


def series_length(start: float, end: float, step: float, limit: int = MAX_SERIES) -> int:
    """How many times ``start, start + step, ...`` up to ``end`` (inclusive, within 1e-9 of a step) holds.

    Raises
    ------
    InvalidInput
        Unless ``start <= end``, ``step > 0`` and all three are finite.
    LimitExceeded
        When the series holds more than ``limit`` (:data:`MAX_SERIES`) times.
    """
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(step)) or step <= 0 or end < start:
        raise InvalidInput(f"a time series needs start <= end and step > 0; got ({start}, {end}, {step})")
    count = steps_in(end - start, step) + 1
    if count > limit:
        raise LimitExceeded(f"a time series may have at most {limit} times; ({start}, {end}, {step}) "
                            f"gives {count}. Use a larger step.")
    return count


def series(start: float, end: float, step: float) -> np.ndarray:
    """The times ``start, start + step, ...`` up to ``end`` inclusive (see :func:`series_length`)."""
    return start + step * np.arange(series_length(start, end, step))


def time_weight_matrix(times, query_times, method: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Distinct stored steps needed by ``query_times`` and the (T, K) matrix combining them.

    Returns ``(steps, W)``: ``value(query_times[j]) = sum_k W[j, k] * value(steps[k])``.
    """
    per_time = [time_weights(times, float(t), method) for t in np.atleast_1d(query_times)]
    steps = np.array(sorted({k for w in per_time for k in w}), dtype=np.int64)
    col = {int(k): j for j, k in enumerate(steps)}
    W = np.zeros((len(per_time), steps.size))
    for r, w in enumerate(per_time):
        for k, v in w.items():
            W[r, col[k]] += v
    return steps, W
