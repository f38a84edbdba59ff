"""The one retry policy of the client, on tenacity: HTTP calls, the xarray engine's reads and job downloads.

What is retried:
- a request that never reached the server (connection refused, connect or pool timeout): always;
- a busy answer (429, 503): after the server's ``Retry-After`` (capped at ``max_wait``), unless the caller
  turned busy retries off (a job submission's 429 is a quota, not a wait);
- a request that reached the server and then failed (connection reset, 502, 504): only when it is
  idempotent (GET, or a query the caller marks safe to repeat);
- a request that timed out after reaching the server: idempotent only, and sent again at most once, so a
  slow query is not multiplied (before: six sends of 300 s each).

Waits are exponential with full jitter, ``uniform(0, min(max_wait, backoff * 2**n))``, added to the server's
``Retry-After`` when it sent one, so parallel batches refused together do not come back together.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import tenacity

T = TypeVar("T")
UTC = timezone(timedelta(0))  # datetime.UTC is 3.11+; the client supports 3.10
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BUSY = (429, 503)
GATEWAY = (502, 504)

# What went wrong with one attempt, as a classifier reports it.
NOT_SENT, REACHED, TIMED_OUT = "not_sent", "reached", "timed_out"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def httpx_failure(exc: BaseException) -> str | None:
    """Classify an httpx exception: never sent, reached the server, timed out after reaching it, or not ours."""
    import httpx

    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return NOT_SENT
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
        return TIMED_OUT
    if isinstance(exc, httpx.TransportError):
        return REACHED
    return None


def _status(result: Any) -> int:
    return int(getattr(result, "status_code", None) or getattr(result, "status", 0) or 0)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry (see the module docstring for what).

    Parameters
    ----------
    retries
        Retries after the first attempt (so at most ``retries + 1`` sends).
    backoff
        Scale of the first wait in seconds; the window doubles with each retry.
    max_wait
        Cap on one wait, ``Retry-After`` included.
    """

    retries: int = 5
    backoff: float = 0.25
    max_wait: float = 30.0

    def wait(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before retry number ``attempt`` (0-based): full jitter ``uniform(0, backoff * 2**attempt)``,
        added to the server's Retry-After when it gave one (never earlier than it asked; parallel requests
        told the same Retry-After spread out), all capped at ``max_wait``."""
        jitter = random.uniform(0.0, min(self.max_wait, self.backoff * 2**attempt))
        told = parse_retry_after(retry_after)
        return min(self.max_wait, jitter if told is None else told + jitter)

    def _tenacity_kwargs(
        self,
        idempotent: bool,
        busy: tuple[int, ...],
        classify: Callable[[BaseException], str | None],
        before_sleep: Callable[[Any], None] | None,
    ) -> dict[str, Any]:
        timeouts = 0

        def should_retry(state: tenacity.RetryCallState) -> bool:
            nonlocal timeouts
            outcome = state.outcome
            assert outcome is not None
            if outcome.failed:
                kind = classify(outcome.exception())
                if kind == NOT_SENT:
                    return True
                if kind == TIMED_OUT and idempotent:
                    timeouts += 1
                    return timeouts <= 1
                return kind == REACHED and idempotent
            status = _status(outcome.result())
            return status in busy or (status in GATEWAY and idempotent)

        def how_long(state: tenacity.RetryCallState) -> float:
            outcome = state.outcome
            told = None
            if outcome is not None and not outcome.failed:
                told = getattr(outcome.result(), "headers", {}).get("Retry-After")
            return self.wait(state.attempt_number - 1, told)

        def give_back(state: tenacity.RetryCallState) -> Any:
            # Out of retries on an answer (say a last 503): hand it back so its detail reaches the user.
            assert state.outcome is not None
            return state.outcome.result()

        def sleep_hook(state: tenacity.RetryCallState) -> None:
            if before_sleep is not None and state.outcome is not None and not state.outcome.failed:
                before_sleep(state.outcome.result())

        return {
            "stop": tenacity.stop_after_attempt(self.retries + 1),
            "wait": how_long,
            "retry": should_retry,
            "retry_error_callback": give_back,
            "before_sleep": sleep_hook,
            "reraise": True,
        }

    def call(
        self,
        send: Callable[[], T],
        *,
        idempotent: bool,
        busy: tuple[int, ...] = BUSY,
        classify: Callable[[BaseException], str | None] = httpx_failure,
        before_sleep: Callable[[Any], None] | None = None,
    ) -> T:
        """Run ``send`` (one attempt: returns a response or raises) under this policy."""
        retrying = tenacity.Retrying(**self._tenacity_kwargs(idempotent, busy, classify, before_sleep))
        return retrying(send)

    async def acall(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        idempotent: bool,
        busy: tuple[int, ...] = BUSY,
        classify: Callable[[BaseException], str | None] = httpx_failure,
        before_sleep: Callable[[Any], None] | None = None,
    ) -> T:
        """The same policy for a coroutine function (AsyncLab, the xarray engine's aiohttp reads)."""
        retrying = tenacity.AsyncRetrying(**self._tenacity_kwargs(idempotent, busy, classify, before_sleep))
        return await retrying(send)
