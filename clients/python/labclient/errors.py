"""Exceptions raised by the client. Each carries the server's ``detail``, ``code`` and HTTP status."""

from __future__ import annotations


class LabClientError(Exception):
    """Base class: the request failed. ``detail`` is the server's explanation of what to change."""

    def __init__(self, detail: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(detail if status is None else f"{detail} (HTTP {status})")
        self.detail = detail
        self.status = status
        self.code = code


class InvalidRequest(LabClientError):
    """The server rejected the input (400/422): fix the parameters named in ``detail``."""


class NotFoundError(LabClientError):
    """Unknown dataset, variable or path (404)."""


class AuthError(LabClientError):
    """Missing, invalid or insufficient token (401/403)."""


class LimitError(LabClientError):
    """Request too large for this token (413); split it, or submit a job."""


class RateLimitError(LabClientError):
    """Too many requests (429), still failing after the retries."""


class ServerError(LabClientError):
    """The service failed (5xx) or is unavailable."""


class ConnectionFailed(LabClientError):
    """The service could not be reached after the retries."""


def error_for_status(status: int, detail: str, code: str | None) -> LabClientError:
    """The exception class matching an HTTP error status."""
    if status in (401, 403):
        return AuthError(detail, status, code)
    if status == 404:
        return NotFoundError(detail, status, code)
    if status == 413:
        return LimitError(detail, status, code)
    if status == 429:
        return RateLimitError(detail, status, code)
    if status >= 500:
        return ServerError(detail, status, code)
    return InvalidRequest(detail, status, code)
