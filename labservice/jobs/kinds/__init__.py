"""The job kinds: the registry the engine looks kinds up in, and the request union built from it.

A kind is a module here that defines ``KIND``, an instance of :class:`~labservice.jobs.kinds.base.JobKind`.
Adding one means writing that module and adding its name to ``_MODULES``.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from labservice.errors import InvalidInput, unknown
from labservice.jobs.kinds.base import JobContext, JobKind, Plan

_MODULES = ("cutout", "points", "particles", "branch", "tap", "sql")  # one line per kind: its module in this package

KINDS: dict[str, JobKind] = {
    kind.name: kind for kind in (importlib.import_module(f"{__name__}.{m}").KIND for m in _MODULES)
}

JobRequest = Annotated[
    Union[tuple(kind.request for kind in KINDS.values())],  # noqa: UP007 (a runtime-built union)
    Field(discriminator="kind"),
]
_request_adapter: TypeAdapter[Any] = TypeAdapter(JobRequest)


def request_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The JSON schema of a job request (a ``kind``-discriminated union), for the OpenAPI document."""
    return _request_adapter.json_schema(ref_template=ref_template)


def parse_request(body: dict[str, Any] | BaseModel) -> Any:
    """Validate a job request; errors name the field to change."""
    if isinstance(body, BaseModel):
        return body
    if isinstance(body, dict) and "kind" in body:
        kind = body["kind"]
        if not isinstance(kind, str):
            raise InvalidInput(f"job request: kind must be one of {', '.join(KINDS)} (a string); got {kind!r:.80}")
        if kind not in KINDS:
            raise unknown("job kind", kind, KINDS, error=InvalidInput)
    try:
        return _request_adapter.validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise InvalidInput(f"job request: {where}: {first['msg']}") from None


def kind_of(req: BaseModel) -> JobKind:
    """The kind that handles a parsed request."""
    return KINDS[req.kind]  # type: ignore[attr-defined]


__all__ = ["KINDS", "JobContext", "JobKind", "Plan", "kind_of", "parse_request", "request_schema"]
