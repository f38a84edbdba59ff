"""The one map from exceptions to HTTP error responses: ``{"detail": ..., "code": ...}``.

:class:`~labservice.errors.LabError` carries its own status and code. Pydantic validation errors stay 422
with one readable sentence per problem. Anything else is a 500 that names an incident id and never shows
a traceback to the caller (the traceback goes to the log).
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

from labservice.encoding import format_validation_errors
from labservice.errors import LabError

log = logging.getLogger("labservice")

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "limit_exceeded",
    415: "unsupported_media_type",
}


def error_body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def lab_error_response(exc: LabError) -> JSONResponse:
    """The response for a library error; 429 and 503 say when to retry."""
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(float(retry_after))))
    extra = {k: v for k, v in exc.extra.items() if isinstance(v, (str, int, float, bool, list))}
    return JSONResponse(error_body(exc.message, exc.code, **extra), status_code=exc.status, headers=headers)


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


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such path {request.url.path!r}; the API lives under /api/v1 (see /docs)"
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(detail, code), status_code=exc.status_code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return internal_error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register the map on an app."""
    app.add_exception_handler(LabError, _on_lab_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
