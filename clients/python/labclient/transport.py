"""HTTP for the client: one connection pool per server, retries by :class:`labclient.retrying.RetryPolicy`.

Errors the server explains (4xx, 5xx) become :class:`~labclient.errors.LabClientError` subclasses that
carry the server's ``detail``.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

import httpx
import numpy as np

from labclient.codec import MSGPACK, pack, unpack
from labclient.errors import ConnectionFailed, error_for_status
from labclient.retrying import BUSY, IDEMPOTENT_METHODS, RetryPolicy

RETRY_STATUS = BUSY
# Answers from this size are read into one buffer and decoded in place (msgpack arrays as views of it).
BUFFER_BYTES = 1 << 20


def read_body(response: httpx.Response) -> np.ndarray | None:
    """Read a streamed response's body into one writable numpy buffer, sized by its Content-Length; None
    (nothing read) when the body is small, compressed or of unknown length: read it as usual then.

    One copy per received byte, into memory numpy asks the kernel to back with huge pages (joining bytes
    objects costs a page fault per 4 kB, and decoding copies the arrays once more).
    """
    length = response.headers.get("content-length", "")
    if not length.isdigit() or int(length) < BUFFER_BYTES or response.headers.get("content-encoding"):
        return None
    buf = np.empty(int(length), dtype=np.uint8)
    pos = 0
    for piece in response.iter_raw():
        end = pos + len(piece)
        if end > len(buf):
            raise httpx.RemoteProtocolError(f"the body is longer than its Content-Length of {length} bytes")
        buf[pos:end] = np.frombuffer(piece, dtype=np.uint8)  # numpy's copy: memoryview slicing is ~5x slower
        pos = end
    if pos != len(buf):
        raise httpx.RemoteProtocolError(f"the body ended after {pos} of its {length} bytes")
    return buf


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
        buffered: bool = False,
    ) -> httpx.Response:
        """Send a request (msgpack-encoded when ``body`` is given) under the retry policy.

        ``idempotent`` (default: by method) says whether a request that reached the server may be sent
        again; point queries are POSTs that are safe to repeat, job submissions are not. ``busy`` lists the
        statuses waited out (429 and 503; a job submission leaves 429, its quota, to the caller).
        ``buffered`` reads a big body into one numpy buffer, ``response.extensions["labclient_body"]``
        (None when it was read as usual, into ``response.content``).
        """
        content, headers = prepare(body, binary)
        safe = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent

        def send() -> httpx.Response:
            if not buffered:
                return self.client.request(method, path, content=content, params=params, headers=headers)
            request = self.client.build_request(method, path, content=content, params=params, headers=headers)
            response = self.client.send(request, stream=True)
            try:  # the whole body is read here, under the retry policy like any other request
                body = read_body(response) if response.status_code < 400 else None
                if body is None:
                    response.read()
                response.extensions["labclient_body"] = body
            finally:
                response.close()
            return response

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
        """Send a request and decode the JSON or msgpack answer (big msgpack arrays are writable views of
        the one buffer the body was read into)."""
        response = self.request(method, path, buffered=True, **kwargs)
        body = response.extensions.get("labclient_body")
        if MSGPACK in response.headers.get("content-type", ""):
            return unpack(response.content if body is None else body)
        return response.json() if body is None else json.loads(body.tobytes())
