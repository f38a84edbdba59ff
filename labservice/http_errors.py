"""The one map from exceptions to HTTP error responses: ``{"detail": ..., "code": ...}``.

Library errors (:class:`~labservice.errors.LabError`) know nothing of HTTP: :data:`STATUS_CODES` maps each
class to its status here, as titiler's ``DEFAULT_STATUS_CODES`` does, and :func:`add_exception_handlers`
registers the map on an app. Pydantic validation errors stay 422 with one readable sentence per problem.
Anything else is a 500 that names an incident id and never shows a traceback to the caller (the traceback
goes to the log).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match

from labservice.encoding import format_validation_errors
from labservice.errors import (
    Conflict,
    CorruptData,
    DatabaseUnavailable,
    Forbidden,
    InvalidInput,
    LabError,
    LimitExceeded,
    NotFound,
    QuotaExceeded,
    RangeNotSatisfiable,
    RateLimited,
    StorageUnavailable,
    Unauthorized,
)

log = logging.getLogger("labservice")

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "limit_exceeded",
    415: "unsupported_media_type",
}


# Exception class -> HTTP status; a subclass not listed takes its nearest listed base's status.
STATUS_CODES: dict[type[LabError], int] = {
    LabError: 400,
    InvalidInput: 422,
    NotFound: 404,
    Unauthorized: 401,
    Forbidden: 403,
    LimitExceeded: 413,
    RangeNotSatisfiable: 416,
    QuotaExceeded: 429,
    Conflict: 409,
    RateLimited: 429,
    StorageUnavailable: 503,
    DatabaseUnavailable: 503,
    CorruptData: 500,
}


def status_for(exc: LabError) -> int:
    """The HTTP status of a library error (the first class in its MRO that the map names)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]  # type: ignore[index]
    return 500


def error_body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def lab_error_response(exc: LabError) -> JSONResponse:
    """The response for a library error; 429 and 503 say when to retry, 416 how long the object is."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(float(exc.retry_after))))
    if isinstance(exc, RangeNotSatisfiable) and "size" in exc.extra:
        headers["Content-Range"] = f"bytes */{exc.extra['size']}"
    extra = {k: v for k, v in exc.extra.items() if isinstance(v, (str, int, float, bool, list))}
    return JSONResponse(error_body(exc.message, exc.code, **extra), status_code=status_for(exc), headers=headers)


def internal_error_response(exc: BaseException) -> JSONResponse:
    """Log the traceback under an incident id; tell the caller only the id."""
    incident = secrets.token_hex(4)
    log.error("internal error %s", incident, exc_info=exc)
    return JSONResponse(
        error_body(
            f"internal error (incident {incident}); this is a bug in the service, not in your request. "
            "Please report the incident id.",
            "internal_error",
        ),
        status_code=500,
    )


async def _on_lab_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LabError)
    return lab_error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    detail = format_validation_errors(errors)
    clean = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
    return JSONResponse(error_body(detail, "invalid_input", errors=jsonable_encoder(clean)), status_code=422)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's own 405 names only one route's)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such path {request.url.path!r}; the API lives under /api/v1 (see /docs)"
    if exc.status_code == 405:
        methods = allowed_methods(request) or [m for m in headers.get("Allow", "").split(", ") if m]
        headers["Allow"] = ", ".join(methods)
        detail = f"method {request.method} is not allowed on {request.url.path!r}; use {' or '.join(methods)}"
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(detail, code), status_code=exc.status_code, headers=headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return internal_error_response(exc)


def add_exception_handlers(app: FastAPI) -> None:
    """Register the map on an app (library errors, validation errors, HTTP errors, anything else)."""
    app.add_exception_handler(LabError, _on_lab_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


# -- OpenAPI ---------------------------------------------------------------------------------------
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error answer: what to change (detail) and a stable machine-readable code.",
    "required": ["detail", "code"],
    "properties": {
        "detail": {"type": "string", "description": "What went wrong and what to change."},
        "code": {"type": "string", "description": "Stable code, e.g. invalid_input, not_found."},
        "errors": {
            "type": "array",
            "description": "Request validation errors, one per problem (422 only).",
            "items": {"type": "object"},
        },
    },
}
# Errors any /api/ operation can answer, whatever the route: the middleware and the error map add them.
_COMMON_ERRORS = {
    "401": "The Authorization header holds an invalid or revoked token.",
    "403": "The token lacks the scope this route needs (read, jobs, mydb, share); the detail names it.",
    "422": "Invalid input; the detail says what to change.",
    "429": "Rate or concurrency limit, or a quota; see Retry-After.",
    "500": "Stored data failed its checksum (corrupt_data, naming dataset and chunk) or a bug (incident id).",
    "503": "The store or the job engine cannot be reached; see Retry-After.",
}
_PATH_ERRORS = {
    "404": "Unknown dataset, variable, simulation, job or key; the detail suggests close matches."
}
_BODY_ERRORS = {"413": "The body is over the size limit, or the request over this caller's limits."}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def document_errors(schema: dict[str, Any], prefix: str | tuple[str, ...] = ("/api/", "/tap/")) -> dict[str, Any]:
    """Make an OpenAPI document describe the error answers this service really sends.

    FastAPI documents its own 422 body (``detail`` as a list); ours is ``{detail: str, code, errors}`` for
    every 4xx and 5xx. Every operation under ``prefix`` also gets the statuses the middleware and the
    error map can answer anywhere (401, 422, 429, 500, 503), 404 when it has path parameters and 413 when
    it takes a body.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        components.pop(name, None)
    components["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if path.startswith(prefix):
                extra = dict(_COMMON_ERRORS)
                if "{" in path or "requestBody" in operation:
                    extra |= _PATH_ERRORS
                if "requestBody" in operation:
                    extra |= _BODY_ERRORS
                for status, text in extra.items():
                    responses.setdefault(status, {"description": text})
            for status, response in responses.items():
                if status[0] in "45" and any(k != "application/json" for k in response.get("content", {})):
                    continue  # a route that answers errors in its own format (TAP's VOTable error documents)
                if status[0] in "45":
                    response.setdefault("description", "Error")
                    response["content"] = {} if method == "head" else {"application/json": {"schema": ref}}
                    if not response["content"]:
                        del response["content"]
    return schema
