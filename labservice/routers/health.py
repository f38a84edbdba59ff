"""Liveness: is the service up, and can it reach its datasets and its job engine."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from labservice import __version__
from labservice.routers.deps import RegistryDep

router = APIRouter(tags=["health"])

_EXAMPLE = {
    "status": "ok",
    "version": __version__,
    "datasets": {"served": ["channel64", "isotropic64"], "failed": {}},
    "jobs": {"enabled": True, "reachable": True, "scheduler": "tcp://127.0.0.1:8786"},
}


def _jobs_state(request: Request) -> dict[str, Any]:
    engine = getattr(request.app.state, "jobs", None)
    client = getattr(engine, "client", None)
    if client is None:
        return {"enabled": False, "reachable": False, "scheduler": None}
    return {
        "enabled": True,
        "reachable": getattr(client, "status", "") == "running",
        "scheduler": getattr(client, "scheduler", None) and client.scheduler.address,
    }


@router.get(
    "/health",
    operation_id="health",
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}},
)
def health(request: Request, registry: RegistryDep) -> dict[str, Any]:
    """Liveness, the datasets served (and any that failed to open) and whether the job engine is reachable."""
    jobs = _jobs_state(request)
    healthy = not registry.failed and (jobs["reachable"] or not jobs["enabled"])
    return {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "datasets": {"served": registry.ids(), "failed": registry.failed},
        "jobs": jobs,
    }
