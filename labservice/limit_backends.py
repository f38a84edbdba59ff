"""Where the per-caller counts live: in this process (the embedded default) or in Redis (shared by every
worker process and host).

One small interface, :class:`LimitBackend`, used by the limits middleware (``take``, ``enter``, ``leave``)
and by the zarr view (``charge``, ``remaining``, ``served``). :func:`backend_from_settings` picks it at app
start: :class:`LocalLimits` without ``LABSERVICE_REDIS_URL``, :class:`RedisLimits` with it.

The Redis back end keeps the semantics of :mod:`labservice.limits` (a token bucket of ``per_minute`` that
refills continuously; a count of requests in flight), made atomic by Lua scripts that read Redis's own
clock, so hosts with skewed clocks share one bucket. A request in flight is a member of a sorted set scored
by its expiry; a live process re-scores its members every few seconds, so the slots of a process that
crashed expire after ``inflight_ttl`` seconds instead of leaking.

When Redis cannot be reached the service keeps answering: :class:`RedisLimits` falls back to its own
:class:`LocalLimits` (per-process limits), sets :attr:`RedisLimits.degraded`, and a background thread pings
Redis every ``retry_seconds`` and switches back when it answers. Requests never wait on a Redis that is
known to be down; a Redis that stops answering costs the requests in flight at most the 0.5 s socket timeout.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from typing import Any, Protocol

from labservice.errors import RateLimited
from labservice.limits import ByteBudget, Caller, InFlight, RateWindow
from labservice.settings import Settings

log = logging.getLogger("labservice.limits")


class LimitBackend(Protocol):
    """Rate buckets, in-flight counts and byte budgets, keyed by :attr:`Caller.key` (or a slot key)."""

    #: True when a shared back end is unreachable and this process counts on its own.
    degraded: bool

    def take(self, key: str, per_minute: int) -> int:
        """Use one request of ``key``'s bucket; return how many remain. RateLimited when none is left."""

    def enter(self, key: str, limit: int) -> Any:
        """Count one request in flight; return a ticket for :meth:`leave`. RateLimited at the limit."""

    def admit(self, key: str, per_minute: int, limit: int) -> tuple[int, Any]:
        """:meth:`take` then :meth:`enter` (one round trip in Redis): (requests left, ticket)."""

    def leave(self, ticket: Any) -> None:
        """The request of ``ticket`` has finished."""

    def charge(self, caller: Caller, nbytes: int) -> int:
        """Take ``nbytes`` from the caller's byte budget; return the bytes left (see ByteBudget.charge)."""

    def remaining(self, caller: Caller) -> int:
        """Bytes the caller may still be sent right now."""

    def served(self, caller: Caller) -> int:
        """The caller's running total of bytes charged."""

    def close(self) -> None:
        """Stop background work."""


class LocalLimits:
    """Counts in this process's memory (today's behaviour): :class:`RateWindow`, :class:`InFlight` and
    :class:`ByteBudget`."""

    degraded = False
    kind = "local"

    def __init__(self) -> None:
        self.rate = RateWindow()
        self.inflight = InFlight()
        self.bytes = ByteBudget()

    def take(self, key: str, per_minute: int) -> int:
        return self.rate.take(key, per_minute)

    def enter(self, key: str, limit: int) -> Any:
        self.inflight.enter(key, limit)
        return key

    def admit(self, key: str, per_minute: int, limit: int) -> tuple[int, Any]:
        return self.take(key, per_minute), self.enter(key, limit)

    def leave(self, ticket: Any) -> None:
        self.inflight.leave(ticket)

    def charge(self, caller: Caller, nbytes: int) -> int:
        return self.bytes.charge(caller, nbytes)

    def remaining(self, caller: Caller) -> int:
        return self.bytes.remaining(caller)

    def served(self, caller: Caller) -> int:
        return self.bytes.served(caller)

    def close(self) -> None:
        pass


# A token bucket: KEYS[1] a hash {level, ts}; ARGV = capacity per minute, cost, write (1) or peek (0).
# Returns {1 if the cost was taken else 0, level after, as a string (Lua numbers return as integers)}.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local cap = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'level', 'ts')
local level = tonumber(v[1]) or cap
local ts = tonumber(v[2]) or now
if now > ts then level = math.min(cap, level + (now - ts) * cap / 60.0) end
local ok = 0
if ARGV[3] == '1' then
  if level >= cost then level = level - cost; ok = 1 end
  redis.call('HSET', KEYS[1], 'level', tostring(level), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], 61000)
end
return {ok, tostring(level)}
"""

# In flight: KEYS[1] a sorted set of request ids scored by expiry (Redis time, seconds);
# ARGV = limit, member, ttl seconds. Expired members (their process died) are pruned first.
_ENTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return 1
"""

# Both of the above in one round trip: KEYS = bucket, in-flight set; ARGV = per minute, limit, member, ttl.
# Returns {0 rate refused | 1 admitted | 2 concurrency refused, bucket level as a string}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local cap = tonumber(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'level', 'ts')
local level = tonumber(v[1]) or cap
local ts = tonumber(v[2]) or now
if now > ts then level = math.min(cap, level + (now - ts) * cap / 60.0) end
local ok = 0
if level >= 1 then level = level - 1; ok = 1 end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 61000)
if ok == 0 then return {0, tostring(level)} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return {2, tostring(level)} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[4]) * 1000))
return {1, tostring(level)}
"""

# Re-score the members this process still holds (ARGV = ttl, then member ids), so they do not expire.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
return 1
"""


def _rate_refusal(per_minute: int, level: float) -> RateLimited:
    """The same 429 as RateWindow.take."""
    wait = max(1, math.ceil((1.0 - level) * 60.0 / per_minute - 1e-9))
    return RateLimited(
        f"too many requests: your limit is {per_minute} per minute; retry after {wait} s",
        retry_after=wait,
        limit="rate",
    )


def _concurrency_refusal(limit: int) -> RateLimited:
    """The same 429 as InFlight.enter."""
    return RateLimited(
        f"too many concurrent requests: your limit is {limit} at once; wait for one to finish",
        retry_after=1,
        limit="concurrency",
    )


SERVED_TTL = 7 * 86400  # the running byte total of a caller idle for a week is forgotten


class RedisLimits:
    """Limits shared through one Redis server by every process and host that points at it.

    Parameters
    ----------
    url
        ``redis://host:port/db`` (``LABSERVICE_REDIS_URL``).
    prefix
        Key prefix, so several services may share one Redis.
    inflight_ttl
        Seconds after which the in-flight slots of a process that stopped refreshing them expire.
    retry_seconds
        How often a degraded process tries Redis again (and a healthy one checks it is still there).
    """

    kind = "redis"

    def __init__(
        self, url: str, prefix: str = "lab:", inflight_ttl: float = 30.0, retry_seconds: float = 1.0
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._errors = (redis.RedisError, OSError)
        # Short timeouts and no retries: a failed call falls back at once (the watcher does the retrying).
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.url = url
        self.prefix = prefix
        self.inflight_ttl = float(inflight_ttl)
        self.retry_seconds = float(retry_seconds)
        self.local = LocalLimits()  # the fallback while Redis is unreachable
        self.degraded = False
        self._lock = threading.Lock()
        self._held: dict[str, set[str]] = {}  # in-flight key -> member ids this process holds
        self._bucket = self.client.register_script(_BUCKET)
        self._enter = self.client.register_script(_ENTER)
        self._refresh = self.client.register_script(_REFRESH)
        self._admit = self.client.register_script(_ADMIT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # -- the switch between Redis and the local fallback ---------------------------------------------
    def _use_redis(self) -> bool:
        # While degraded, requests count locally and never wait on Redis: the watcher thread pings it
        # every retry_seconds and clears `degraded` when it answers.
        self._ensure_thread()
        return not self.degraded

    def _failed(self, exc: BaseException) -> None:
        if not self.degraded:
            log.warning(
                "Redis at %s unreachable (%s): limits are per process until it answers", self.url, exc
            )
        self.degraded = True

    def _ok(self) -> None:
        if self.degraded:
            log.warning("Redis at %s answers again: limits are shared again", self.url)
        self.degraded = False

    def _ensure_thread(self) -> None:
        # Started on first use, in the process that serves (a forked worker gets its own).
        if (self._thread is None or self._pid != os.getpid()) and not self._stop.is_set():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._watch, name="labservice-limits", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        refresh_every = max(self.inflight_ttl / 3.0, self.retry_seconds)
        next_refresh = time.monotonic() + refresh_every
        while not self._stop.wait(self.retry_seconds):
            try:
                self.client.ping()
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + refresh_every
                    with self._lock:
                        held = {k: list(v) for k, v in self._held.items() if v}
                    for key, members in held.items():
                        self._refresh(keys=[key], args=[self.inflight_ttl, *members])
                self._ok()
            except self._errors as exc:
                self._failed(exc)

    def ping(self) -> None:
        """Raise when Redis does not answer (for /readyz); a success ends the degraded state."""
        self.client.ping()
        self._ok()

    # -- the interface ------------------------------------------------------------------------------
    def _run_bucket(self, key: str, capacity: int, cost: int, write: bool) -> tuple[bool, float]:
        ok, level = self._bucket(keys=[key], args=[int(capacity), int(cost), "1" if write else "0"])
        return bool(ok), float(level)

    def take(self, key: str, per_minute: int) -> int:
        if self._use_redis():
            try:
                ok, level = self._run_bucket(f"{self.prefix}rate:{key}", per_minute, 1, True)
            except self._errors as exc:
                self._failed(exc)
            else:
                self._ok()
                if not ok:
                    raise _rate_refusal(per_minute, level)
                return int(level)
        return self.local.take(key, per_minute)

    def enter(self, key: str, limit: int) -> Any:
        if self._use_redis():
            zkey, member = f"{self.prefix}inflight:{key}", uuid.uuid4().hex
            with self._lock:  # held before it is added, so the refresher never misses it
                self._held.setdefault(zkey, set()).add(member)
            try:
                admitted = self._enter(keys=[zkey], args=[int(limit), member, self.inflight_ttl])
            except self._errors as exc:
                self._forget(zkey, member)
                self._failed(exc)
            else:
                self._ok()
                if not admitted:
                    self._forget(zkey, member)
                    raise _concurrency_refusal(limit)
                return ("redis", zkey, member)
        return ("local", self.local.enter(key, limit))

    def _admit_locally(self, key: str, per_minute: int, limit: int) -> tuple[int, Any]:
        remaining, ticket = self.local.admit(key, per_minute, limit)
        return remaining, ("local", ticket)

    def admit(self, key: str, per_minute: int, limit: int) -> tuple[int, Any]:
        if not self._use_redis():
            return self._admit_locally(key, per_minute, limit)
        bkey, zkey, member = f"{self.prefix}rate:{key}", f"{self.prefix}inflight:{key}", uuid.uuid4().hex
        with self._lock:
            self._held.setdefault(zkey, set()).add(member)
        try:
            status, level = self._admit(
                keys=[bkey, zkey], args=[int(per_minute), int(limit), member, self.inflight_ttl]
            )
        except self._errors as exc:
            self._forget(zkey, member)
            self._failed(exc)
            return self._admit_locally(key, per_minute, limit)
        self._ok()
        if status != 1:
            self._forget(zkey, member)
            if status == 0:
                raise _rate_refusal(per_minute, float(level))
            raise _concurrency_refusal(limit)
        return int(float(level)), ("redis", zkey, member)

    def _forget(self, zkey: str, member: str) -> None:
        with self._lock:
            members = self._held.get(zkey)
            if members is not None:
                members.discard(member)
                if not members:
                    del self._held[zkey]

    def leave(self, ticket: Any) -> None:
        if ticket[0] == "local":
            self.local.leave(ticket[1])
            return
        _, zkey, member = ticket
        self._forget(zkey, member)
        try:
            self.client.zrem(zkey, member)
        except self._errors as exc:  # not refreshed any more: it expires after inflight_ttl
            self._failed(exc)

    def charge(self, caller: Caller, nbytes: int) -> int:
        per_minute = int(caller.limits.bytes_per_minute)
        if nbytes > per_minute:  # ByteBudget raises the 413: it can never be sent in one piece
            return self.local.charge(caller, nbytes)
        if self._use_redis():
            try:
                ok, level = self._run_bucket(f"{self.prefix}bytes:{caller.key}", per_minute, nbytes, True)
                if ok:
                    served = f"{self.prefix}served:{caller.key}"
                    with self.client.pipeline(transaction=False) as pipe:
                        pipe.incrby(served, int(nbytes)).expire(served, SERVED_TTL).execute()
            except self._errors as exc:
                self._failed(exc)
            else:
                self._ok()
                if not ok:
                    wait = max(1, math.ceil((nbytes - level) * 60.0 / per_minute - 1e-9))
                    raise RateLimited(
                        f"byte budget used up: you may read {per_minute} bytes per minute and {int(level)} are "
                        f"left; this read needs {nbytes}; retry after {wait} s",
                        retry_after=wait,
                        limit="bytes",
                    )
                return int(level)
        return self.local.charge(caller, nbytes)

    def remaining(self, caller: Caller) -> int:
        per_minute = int(caller.limits.bytes_per_minute)
        if self._use_redis():
            try:
                _, level = self._run_bucket(f"{self.prefix}bytes:{caller.key}", per_minute, 0, False)
            except self._errors as exc:
                self._failed(exc)
            else:
                return int(level)
        return self.local.remaining(caller)

    def served(self, caller: Caller) -> int:
        if self._use_redis():
            try:
                value = self.client.get(f"{self.prefix}served:{caller.key}")
            except self._errors as exc:
                self._failed(exc)
            else:
                return int(value or 0)
        return self.local.served(caller)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._thread.join(timeout=5)
        self.client.close()


def backend_from_settings(settings: Settings) -> LocalLimits | RedisLimits:
    """:class:`RedisLimits` when ``settings.redis_url`` is set, else :class:`LocalLimits`."""
    if not settings.redis_url:
        return LocalLimits()
    return RedisLimits(settings.redis_url, inflight_ttl=settings.redis_inflight_ttl)


__all__ = ["LimitBackend", "LocalLimits", "RedisLimits", "backend_from_settings"]
