"""ASGI middleware that identifies the caller and applies the per-caller rate and concurrency limits.

It runs once per request under ``/api/``: resolves the caller once (``Authorization: Bearer ...``, or
``?token=`` on the zarr view, which zarr clients open as plain URLs), stores the
:class:`~labservice.limits.Caller` in the request state, takes one request from the caller's rate bucket,
counts the request in flight, and adds the cost and quota headers to the response (errors included).
Routers set ``request.state.cost`` to what the request cost (points x times, or bytes of a cutout).
The counts live in a :class:`~labservice.limit_backends.LimitBackend`: this process, or Redis when the
app is configured with ``redis_url`` (then they hold across every worker and host).

A public caller is named by its address: the TCP peer, or, when the peer is one of ``trusted_proxies``,
the nearest untrusted address in ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labservice.errors import LabError, Unauthorized
from labservice.http_errors import internal_error_response, lab_error_response
from labservice.limit_backends import LimitBackend, LocalLimits
from labservice.limits import Caller, Limits, is_zarr_path, request_slot
from labservice.tokens import TokenStore
from labservice.users import require_scope, scope_for

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def caller_from_headers(
    headers: dict[str, str],
    client_host: str,
    tokens: TokenStore | None,
    public: Limits,
    query_token: str | None = None,
) -> Caller:
    """Resolve the caller of a request; raise Unauthorized for a bad token.

    ``query_token`` is the ``?token=`` of a zarr-view URL; the Authorization header wins over it.
    """
    auth = headers.get("authorization", "").strip()
    if not auth:
        if query_token:
            if tokens is None:
                raise Unauthorized("this server has no token database; call it without a token")
            return tokens.verify(query_token.strip())
        return Caller(token_id=None, name=client_host or "anonymous", limits=public)
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "send the token as 'Authorization: Bearer lab_...', or no header for public access"
        )
    if tokens is None:
        raise Unauthorized("this server has no token database; call it without an Authorization header")
    return tokens.verify(token.strip())


def query_token(path: str, query_string: bytes) -> str | None:
    """The ``?token=`` of a zarr-view request (None elsewhere: tokens in URLs end up in logs)."""
    if not query_string or not (is_zarr_path(path) or path.endswith("/zarr-stats")):
        return None
    values = parse_qs(query_string.decode("latin-1")).get("token")
    return values[-1] if values else None


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """IPs or CIDRs (``LABSERVICE_TRUSTED_PROXIES``) as networks; ValueError names a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"trusted_proxies: {entry!r} is not an IP address or CIDR (e.g. 10.0.0.5 or 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy, then the nearest untrusted hop of
    ``X-Forwarded-For`` (the rightmost hops were appended by our proxies; the left ones anyone can write)."""
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:  # not an address: our proxy did not write it, so do not trust it
                return peer
    return hops[0] if hops else peer


def route_path(scope: Scope) -> str:
    """The path below the app's ``root_path`` (uvicorn puts the prefix in both)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class LimitsMiddleware:
    """Caller identification, rate limit, concurrency limit and quota headers."""

    def __init__(
        self,
        app: ASGIApp,
        prefix: str | tuple[str, ...] = "/api/",
        backend: LimitBackend | None = None,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.backend: LimitBackend = backend if backend is not None else LocalLimits()
        self.trusted = parse_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if scope["type"] != "http" or not path.startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            name, value = k.decode("latin-1").lower(), v.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name == "x-forwarded-for" and name in headers else value
        client = scope.get("client")
        peer = client[0] if client else ""
        tokens = state.get("tokens")
        qtoken = query_token(path, scope.get("query_string", b""))
        args = (
            headers,
            client_address(peer, headers.get("x-forwarded-for"), self.trusted),
            tokens,
            state.get("public_limits", Limits()),
            qtoken,
        )
        presented = headers.get("authorization", "").partition(" ")[2].strip() or (qtoken or "").strip()
        try:
            if tokens is not None and presented and tokens.cached(presented) is None:
                # A database lookup: off the event loop, so a slow database stalls only this request.
                caller = await run_in_threadpool(caller_from_headers, *args)
            else:
                caller = caller_from_headers(*args)
            # A token's scopes (read, jobs, mydb, share) gate what it may call; 403 names the missing one.
            require_scope(caller, scope_for(scope.get("method", "GET"), path))
            slot = request_slot(caller, path)  # zarr reads have their own, wider bucket
            remaining, ticket = self.backend.admit(slot.key, slot.per_minute, slot.max_concurrent)
        except LabError as exc:
            await lab_error_response(exc)(scope, receive, send)
            return
        state["caller"] = caller
        quota = {
            b"x-ratelimit-limit": str(slot.per_minute).encode(),
            b"x-ratelimit-remaining": str(remaining).encode(),
            b"x-lab-caller": (caller.name if caller.token_id else "public").encode("latin-1", "replace"),
            b"x-lab-points-limit": str(caller.limits.points_per_request).encode(),
        }
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = dict(quota)
                extra[b"x-lab-cost"] = str(state.get("cost", 0)).encode()
                message = {**message, "headers": list(message.get("headers", [])) + list(extra.items())}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # never a traceback to the caller; the handler logs it
            if started:
                raise
            await internal_error_response(exc)(scope, receive, send_with_headers)
        finally:
            self.backend.leave(ticket)


# Sent on every response unless a route set its own (portal pages add a Content-Security-Policy).
SECURITY_HEADERS: dict[bytes, bytes] = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cross-origin-resource-policy": b"same-site",
}
# Headers a browser script may read from a cross-origin answer (quota, cost, ranges, ETags).
EXPOSED_HEADERS = [
    "X-Lab-Cost",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-Lab-Points-Limit",
    "Retry-After",
    "Content-Range",
    "Content-Disposition",
    "ETag",
    "Location",
]


class SecurityHeadersMiddleware:
    """Add :data:`SECURITY_HEADERS` to every HTTP response that does not already carry them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS.items() if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_options(origins: list[str]) -> dict[str, Any]:
    """Keyword arguments of Starlette's CORSMiddleware for the configured origins (bearer tokens, no cookies)."""
    return {
        "allow_origins": list(origins),
        "allow_methods": ["GET", "HEAD", "POST", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type", "Accept", "Range", "If-None-Match"],
        "expose_headers": EXPOSED_HEADERS,
        "allow_credentials": False,
        "max_age": 600,
    }
