"""Per-caller limits: size of one request, requests per minute, requests in flight and bytes per minute.

A caller is either public (no token) or a registered token. Request sizes are checked by the routers with
:func:`check_points` and :func:`check_cutout_bytes`; the rate and the concurrency are checked once per
request by the limits middleware (:class:`RateWindow`, :class:`InFlight`, :func:`request_slot`).
Routers that send bulk data charge it to the caller's :class:`ByteBudget`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from labservice.errors import LimitExceeded, RateLimited

if TYPE_CHECKING:
    from labservice.limit_backends import LimitBackend

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
    # Bulk bytes sent per minute (zarr chunk reads), a token bucket that refills continuously.
    bytes_per_minute: int = 1024 * MIB
    # zarr and dask fire many small byte-range reads (a shard index, then each inner chunk), often at
    # once: reads of the zarr view are counted in their own, wider bucket (see concurrency_slot).
    zarr_requests_per_minute: int = 12_000
    zarr_max_concurrent: int = 32

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass(frozen=True)
class Caller:
    """Who is asking. ``token_id`` is None for public callers."""

    token_id: str | None
    name: str
    limits: Limits = field(default_factory=Limits)
    # The user the token belongs to (labservice.users) and what the token may do (public: no user, never
    # scope-checked).
    user_id: str | None = None
    user: str | None = None
    scopes: frozenset[str] = frozenset({"read", "jobs", "mydb", "share"})
    admin: bool = False

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
            "does this for you) or use a token with a larger limit",
            limit="size",
        )
    return cost


def check_cutout_bytes(limits: Limits, nbytes: int, sync_cap: int, job_hint: str) -> None:
    """Raise LimitExceeded when a cutout is over the caller's synchronous cutout limit (the smaller of the
    token's ``max_cutout_bytes`` and the server's ``sync_cutout_bytes``)."""
    cap = min(limits.max_cutout_bytes, sync_cap)
    if nbytes > cap:
        raise LimitExceeded(
            f"this cutout is {nbytes / MIB:.1f} MiB, over your synchronous cutout limit of {cap / MIB:.1f} MiB; "
            f"use a larger stride or a smaller box, or submit it as a job: {job_hint}",
            limit="size",
        )


@dataclass(frozen=True)
class Slot:
    """The bucket one request is counted in, with its rate and concurrency limits."""

    key: str
    per_minute: int
    max_concurrent: int


def is_zarr_path(path: str) -> bool:
    """A read of a dataset's zarr view (``.../zarr`` or ``.../zarr/<key>``)."""
    return "/zarr/" in path or path.endswith("/zarr")


def request_slot(caller: Caller, path: str) -> Slot:
    """Where the middleware counts one request of ``caller`` to ``path``.

    Reads of the zarr view (``.../zarr/...``) are cheap byte-range reads that zarr and dask issue many of,
    in parallel (zarr alone runs up to 10 at once per array read; a 64^3 shard read piecewise is 16
    requests), so they are counted apart from the other requests, against the larger of the caller's
    general limits and ``zarr_requests_per_minute`` / ``zarr_max_concurrent``. Their volume is bounded by
    ``bytes_per_minute`` instead.
    """
    lim = caller.limits
    if is_zarr_path(path):
        return Slot(
            f"{caller.key}:zarr",
            max(lim.requests_per_minute, lim.zarr_requests_per_minute),
            max(lim.max_concurrent, lim.zarr_max_concurrent),
        )
    return Slot(caller.key, lim.requests_per_minute, lim.max_concurrent)


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
                    limit="rate",
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
                    limit="concurrency",
                )
            self._count[key] = n + 1

    def leave(self, key: str) -> None:
        with self._lock:
            n = self._count.get(key, 1) - 1
            if n <= 0:
                self._count.pop(key, None)
            else:
                self._count[key] = n


class ByteBudget:
    """Bytes each caller may be sent per minute: a token bucket of ``bytes_per_minute`` that refills
    continuously, plus each caller's running total since the server started.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (bytes left, last refill time)
        self._served: dict[str, int] = {}

    def _level(self, key: str, per_minute: int, now: float) -> float:
        left, last = self._buckets.get(key, (float(per_minute), now))
        return min(float(per_minute), left + (now - last) * per_minute / 60.0)

    def charge(self, caller: Caller, nbytes: int, now: float | None = None) -> int:
        """Take ``nbytes`` from the caller's budget; return the bytes left this minute.

        Raises
        ------
        LimitExceeded
            When ``nbytes`` alone is over the per-minute budget (it can never be sent in one piece).
        RateLimited
            When the budget has too little left now; ``retry_after`` says when it will have enough.
        """
        per_minute = int(caller.limits.bytes_per_minute)
        if nbytes > per_minute:
            raise LimitExceeded(
                f"this read is {nbytes} bytes, over your budget of {per_minute} bytes per minute; ask for "
                "a byte range (zarr reads single inner chunks of a shard that way) or use a token with a "
                "larger bytes_per_minute",
                limit="size",
            )
        now = time.monotonic() if now is None else now
        with self._lock:
            left = self._level(caller.key, per_minute, now)
            if left < nbytes:
                self._buckets[caller.key] = (left, now)
                wait = max(1, math.ceil((nbytes - left) * 60.0 / per_minute - 1e-9))
                raise RateLimited(
                    f"byte budget used up: you may read {per_minute} bytes per minute and {int(left)} are "
                    f"left; this read needs {nbytes}; retry after {wait} s",
                    retry_after=wait,
                    limit="bytes",
                )
            left -= nbytes
            self._buckets[caller.key] = (left, now)
            self._served[caller.key] = self._served.get(caller.key, 0) + int(nbytes)
            return int(left)

    def remaining(self, caller: Caller, now: float | None = None) -> int:
        """Bytes the caller may still be sent right now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return int(self._level(caller.key, int(caller.limits.bytes_per_minute), now))

    def served(self, caller: Caller) -> int:
        """The caller's running total of bytes charged since the server started."""
        with self._lock:
            return self._served.get(caller.key, 0)


def shared_byte_budget(holder: object) -> ByteBudget | LimitBackend:
    """The byte budget of ``holder`` (the app state): its limits back end (in-process or Redis, see
    :mod:`labservice.limit_backends`; the same ``charge``, ``remaining`` and ``served``), or else one
    :class:`ByteBudget` kept on it, created on first use."""
    backend = getattr(holder, "limits_backend", None)
    if backend is not None:
        return backend
    budget = getattr(holder, "byte_budget", None)
    if budget is None:
        budget = ByteBudget()
        setattr(holder, "byte_budget", budget)  # noqa: B010 - holder is any attribute bag
    return budget
