"""HTTP for the client: one connection pool per server, retries by :class:`labclient.retrying.RetryPolicy`.

Errors the server explains (4xx, 5xx) become :class:`~labclient.errors.LabClientError` subclasses that
carry the server's ``detail``.
"""

from __future__ import annotations

import weakref
from typing import Any

import httpx

from labclient.codec import MSGPACK, pack, unpack
from labclient.errors import ConnectionFailed, error_for_status
from labclient.retrying import BUSY, IDEMPOTENT_METHODS, RetryPolicy

RETRY_STATUS = BUSY


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:500]
        return (text or response.reason_phrase or "no detail given"), None
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"]), body.get("code")
    return str(body)[:500], None


def prepare(body: dict[str, Any] | None, binary: bool) -> tuple[bytes | None, dict[str, str]]:
    """Request content and headers: msgpack in when ``body`` is given, msgpack or JSON out."""
    headers = {"Accept": MSGPACK if binary else "application/json"}
    if body is None:
        return None, headers
    headers["Content-Type"] = MSGPACK
    return pack(body), headers


def failure(
    method: str, url: str, exc: httpx.TransportError, timeout: float, safe: bool, tries: int
) -> ConnectionFailed:
    """The error for a request that got no answer after the retry policy gave up."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(
        exc, (httpx.ConnectTimeout, httpx.PoolTimeout)
    ):
        again = "" if safe else "; not sent again because it may have been carried out"
        return ConnectionFailed(
            f"{method} {url} got no answer in time ({exc!r}); the timeout is {timeout} s{again}"
        )
    return ConnectionFailed(f"could not reach {url} after up to {tries} attempts: {exc!r}")


class Transport:
    """One connection pool to one server, safe to share between threads.

    Parameters
    ----------
    url
        Base URL of the service, e.g. ``http://127.0.0.1:8000``.
    token
        Bearer token, or None for public access.
    timeout
        Seconds to wait for a response (connect timeout is 10 s).
    retries, backoff, max_wait
        The :class:`~labclient.retrying.RetryPolicy`: retries after the first send, the scale of the first
        wait (s, full jitter, the window doubling each time) and the cap on one wait (s).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_wait: float = 30.0,
        pool_size: int = 16,
    ) -> None:
        headers = {"User-Agent": "labclient"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff, max_wait)
        self.client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
        )
        # Close the pool when the transport is garbage collected, so forgotten clients leak no sockets.
        self._finalizer = weakref.finalize(self, self.client.close)

    def close(self) -> None:
        self._finalizer()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        binary: bool = True,
        idempotent: bool | None = None,
        busy: tuple[int, ...] = BUSY,
    ) -> httpx.Response:
        """Send a request (msgpack-encoded when ``body`` is given) under the retry policy.

        ``idempotent`` (default: by method) says whether a request that reached the server may be sent
        again; point queries are POSTs that are safe to repeat, job submissions are not. ``busy`` lists the
        statuses waited out (429 and 503; a job submission leaves 429, its quota, to the caller).
        """
        content, headers = prepare(body, binary)
        safe = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent

        def send() -> httpx.Response:
            return self.client.request(method, path, content=content, params=params, headers=headers)

        try:
            response = self.policy.call(send, idempotent=safe, busy=busy)
        except httpx.TransportError as exc:
            raise failure(
                method, f"{self.url}{path}", exc, self.timeout, safe, self.policy.retries + 1
            ) from exc
        if response.status_code >= 400:
            detail, code = _detail(response)
            raise error_for_status(response.status_code, detail, code)
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and decode the JSON or msgpack answer."""
        response = self.request(method, path, **kwargs)
        if MSGPACK in response.headers.get("content-type", ""):
            return unpack(response.content)
        return response.json()
