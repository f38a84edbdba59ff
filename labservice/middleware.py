"""ASGI middleware that identifies the caller and applies the per-caller rate and concurrency limits.

It runs once per request under ``/api/``: reads ``Authorization: Bearer ...``, stores the
:class:`~labservice.limits.Caller` in the request state, takes one request from the caller's rate bucket,
counts the request in flight, and adds the cost and quota headers to the response (errors included).
Routers set ``request.state.cost`` to what the request cost (points x times, or bytes of a cutout).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labservice.errors import LabError, Unauthorized
from labservice.http_errors import internal_error_response, lab_error_response
from labservice.limits import Caller, InFlight, Limits, RateWindow, request_slot
from labservice.tokens import TokenStore


def caller_from_headers(
    headers: dict[str, str], client_host: str, tokens: TokenStore | None, public: Limits
) -> Caller:
    """Resolve the caller of a request; raise Unauthorized for a bad token."""
    auth = headers.get("authorization", "").strip()
    if not auth:
        return Caller(token_id=None, name=client_host or "anonymous", limits=public)
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "send the token as 'Authorization: Bearer lab_...', or no header for public access"
        )
    if tokens is None:
        raise Unauthorized("this server has no token database; call it without an Authorization header")
    return tokens.verify(token.strip())


class LimitsMiddleware:
    """Caller identification, rate limit, concurrency limit and quota headers."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/") -> None:
        self.app = app
        self.prefix = prefix
        self.rate = RateWindow()
        self.inflight = InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client")
        try:
            caller = caller_from_headers(
                headers,
                client[0] if client else "",
                state.get("tokens"),
                state.get("public_limits", Limits()),
            )
            slot = request_slot(caller, scope["path"])  # zarr reads have their own, wider bucket
            remaining = self.rate.take(slot.key, slot.per_minute)
            self.inflight.enter(slot.key, slot.max_concurrent)
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
            self.inflight.leave(slot.key)


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
