"""One exception hierarchy for the whole service.

Library code (storage, interpolation, cutout, datasets) raises these; the web app maps each class to an
HTTP status in one place (``labservice.app``). Messages say what the caller should change.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LabError(Exception):
    """Base class. ``status`` is the HTTP status the service answers with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidInput(LabError):
    """A parameter has the wrong value, shape or type."""

    status = 422
    code = "invalid_input"


class OutOfDomain(InvalidInput):
    """A point or index lies outside a non-periodic axis, or a time outside the stored range."""

    code = "out_of_domain"


class NotFound(LabError):
    status = 404
    code = "not_found"


class Unauthorized(LabError):
    status = 401
    code = "unauthorized"


class Forbidden(LabError):
    status = 403
    code = "forbidden"


class LimitExceeded(LabError):
    """The request is larger than this caller may ask for in one go."""

    status = 413
    code = "limit_exceeded"


class QuotaExceeded(LabError):
    """A standing quota (running jobs, scratch bytes) is used up."""

    status = 429
    code = "quota_exceeded"


class RateLimited(LabError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float, **extra: object) -> None:
        super().__init__(message, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class StorageUnavailable(LabError):
    """The store could not be reached; retrying later may work."""

    status = 503
    code = "storage_unavailable"

    def __init__(self, message: str, retry_after: float = 5.0, **extra: object) -> None:
        super().__init__(message, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class CorruptData(LabError):
    """Stored bytes failed their checksum. Never served; names the dataset and chunk."""

    status = 500
    code = "corrupt_data"


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choices, or "" when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown(kind: str, name: str, choices: Iterable[str], error: type[LabError] = NotFound) -> LabError:
    """Build the standard "unknown X" error with close matches and the full list."""
    choices = sorted(choices)
    return error(f"unknown {kind} {name!r}.{suggest(name, choices)} Choose one of: {', '.join(choices)}.")
