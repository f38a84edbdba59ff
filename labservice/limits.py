"""Per-caller limits: size of one request, requests per minute and requests in flight.

A caller is either public (no token) or a registered token. Request sizes are checked by the routers with
:func:`check_points` and :func:`check_cutout_bytes`; the rate and the concurrency are checked once per
request by :class:`Throttle`, which the app runs as middleware.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field

from labservice.errors import LimitExceeded, RateLimited

MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one caller may do. Sizes are per request; counts per minute or at once."""

    points_per_request: int = 4096
    max_cutout_bytes: int = 16 * MIB
    requests_per_minute: int = 600
    max_concurrent: int = 4
    jobs_allowed: bool = False
    max_running_jobs: int = 0
    scratch_bytes: int = 0
    max_job_bytes: int = 0

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass(frozen=True)
class Caller:
    """Who is asking. ``token_id`` is None for public callers."""

    token_id: str | None
    name: str
    limits: Limits = field(default_factory=Limits)

    @property
    def key(self) -> str:
        """The bucket this caller's rate and concurrency are counted in."""
        return f"token:{self.token_id}" if self.token_id else f"public:{self.name}"


def check_points(limits: Limits, npoints: int, ntimes: int = 1) -> int:
    """Raise LimitExceeded when points x times is over the caller's limit; return the cost."""
    cost = int(npoints) * max(int(ntimes), 1)
    if cost > limits.points_per_request:
        times = f" x {ntimes} times" if ntimes > 1 else ""
        raise LimitExceeded(
            f"this request asks for {npoints} points{times} = {cost}, over your limit of "
            f"{limits.points_per_request} per request; split it into smaller requests (the Python client "
            "does this for you) or use a token with a larger limit"
        )
    return cost


def check_cutout_bytes(limits: Limits, nbytes: int, sync_cap: int, job_hint: str) -> None:
    """Raise LimitExceeded (413) when a cutout is over the caller's or the server's synchronous limit."""
    cap = min(limits.max_cutout_bytes, sync_cap)
    if nbytes > cap:
        raise LimitExceeded(
            f"this cutout is {nbytes / MIB:.1f} MiB, over the synchronous limit of {cap / MIB:.1f} MiB for "
            f"your token; use a larger stride or a smaller box, or submit it as a job: {job_hint}"
        )


class RateWindow:
    """A token bucket per caller: ``rate`` requests per minute, bursts up to ``rate``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def take(self, key: str, per_minute: int, now: float | None = None) -> int:
        """Use one request; return how many remain. Raise RateLimited with the wait when none is left."""
        now = time.monotonic() if now is None else now
        refill = per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * refill)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / refill - 1e-9))
                raise RateLimited(
                    f"too many requests: your limit is {per_minute} per minute; retry after {wait} s",
                    retry_after=wait,
                )
            tokens -= 1.0
            self._buckets[key] = (tokens, now)
            return int(tokens)


class InFlight:
    """Counts each caller's requests in progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}

    def enter(self, key: str, limit: int) -> None:
        with self._lock:
            n = self._count.get(key, 0)
            if n >= limit:
                raise RateLimited(
                    f"too many concurrent requests: your limit is {limit} at once; wait for one to finish",
                    retry_after=1,
                )
            self._count[key] = n + 1

    def leave(self, key: str) -> None:
        with self._lock:
            n = self._count.get(key, 1) - 1
            if n <= 0:
                self._count.pop(key, None)
            else:
                self._count[key] = n
