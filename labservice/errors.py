"""One exception hierarchy for the whole service.

Library code (storage, interpolation, cutout, datasets) raises these. They carry a stable ``code`` and a
message that says what the caller should change, and nothing of HTTP: the web layer maps each class to a
status in one place (:data:`labservice.http_errors.STATUS_CODES`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LabError(Exception):
    """Base class. ``code`` is the stable machine-readable name of the error.

    Classes that set ``retry_after`` (seconds) tell the caller when to try again; a ``retry_after=``
    keyword overrides it per error, and it travels with the other keywords in :attr:`extra`.
    """

    code = "bad_request"
    retry_after: float | None = None

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        if type(self).retry_after is not None:
            extra.setdefault("retry_after", type(self).retry_after)
        self.message = message
        self.extra = extra
        if "retry_after" in extra:
            self.retry_after = extra["retry_after"]  # type: ignore[assignment]


class InvalidInput(LabError):
    """A parameter has the wrong value, shape or type."""

    code = "invalid_input"


class OutOfDomain(InvalidInput):
    """A point or index lies outside a non-periodic axis, or a time outside the stored range."""

    code = "out_of_domain"


class NotFound(LabError):
    code = "not_found"


class Unauthorized(LabError):
    code = "unauthorized"


class Forbidden(LabError):
    code = "forbidden"


class LimitExceeded(LabError):
    """The request is larger than this caller may ask for in one go."""

    code = "limit_exceeded"


class RangeNotSatisfiable(LabError):
    """A byte range that is malformed or lies outside the object (``size`` bytes)."""

    code = "range_not_satisfiable"


class QuotaExceeded(LabError):
    """A standing quota (running jobs, scratch bytes) is used up."""

    code = "quota_exceeded"


class Conflict(LabError):
    """The request clashes with what exists: a name taken, the last owner leaving, a count quota full."""

    code = "conflict"


class RateLimited(LabError):
    """Too many requests or bytes for now; ``retry_after`` (required) says when to try again."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: float, **extra: object) -> None:
        super().__init__(message, retry_after=retry_after, **extra)


class StorageUnavailable(LabError):
    """The store could not be reached; retrying later may work."""

    code = "storage_unavailable"
    retry_after = 5.0


class DatabaseUnavailable(StorageUnavailable):
    """The platform database (tokens, jobs) could not be reached; retrying in a few seconds may work."""

    code = "database_unavailable"
    retry_after = 2.0


class CorruptData(LabError):
    """Stored bytes failed their checksum. Never served; names the dataset and chunk."""

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
