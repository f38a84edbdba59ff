"""HTTP with retries: connection failures, 503 and 429 are retried with backoff, honouring Retry-After.

Errors the server explains (4xx, 5xx) become :class:`~labclient.errors.LabClientError` subclasses that
carry the server's ``detail``.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import httpx

from labclient.codec import MSGPACK, pack, unpack
from labclient.errors import ConnectionFailed, LabClientError, error_for_status

RETRY_STATUS = (429, 503)


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:500]
        return (text or response.reason_phrase or "no detail given"), None
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"]), body.get("code")
    return str(body)[:500], None


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
    retries
        How many times a transient failure is retried.
    backoff
        First wait in seconds; doubled on each retry (capped at ``max_wait``).
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

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_wait)
            except ValueError:
                pass
        return min(self.backoff * 2**attempt, self.max_wait)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        binary: bool = True,
    ) -> httpx.Response:
        """Send a request, msgpack-encoded when ``body`` is given; retry transient failures."""
        headers = {"Accept": MSGPACK if binary else "application/json"}
        content = None
        if body is not None:
            content = pack(body)
            headers["Content-Type"] = MSGPACK
        for attempt in range(self.retries + 1):
            try:
                response = self.client.request(method, path, content=content, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ConnectionFailed(
                        f"could not reach {self.url}{path} after {self.retries + 1} attempts: {exc!r}"
                    ) from exc
                time.sleep(self._wait(attempt, None))
                continue
            if response.status_code in RETRY_STATUS and attempt < self.retries:
                time.sleep(self._wait(attempt, response.headers.get("retry-after")))
                continue
            if response.status_code >= 400:
                detail, code = _detail(response)
                raise error_for_status(response.status_code, detail, code)
            return response
        raise LabClientError("unreachable: the retry loop ended without a response")  # pragma: no cover

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and decode the JSON or msgpack answer."""
        response = self.request(method, path, **kwargs)
        if MSGPACK in response.headers.get("content-type", ""):
            return unpack(response.content)
        return response.json()
