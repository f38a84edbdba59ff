"""Point queries: values at points, particle tracking, box filters and thresholds.

Each route parses the body (JSON or msgpack), checks the caller's limits, runs the in-process engine in a
worker thread, and encodes the result the way Accept asks.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from labservice.encoding import openapi_body, parse_request, respond
from labservice.errors import InvalidInput, LimitExceeded
from labservice.limits import Caller, check_cutout_bytes, check_points
from labservice.routers.deps import DatasetRegistry, get_caller, get_datasets, get_settings
from labservice.routers.models import (
    EXAMPLE_FILTER,
    EXAMPLE_PARTICLES,
    EXAMPLE_POINTS,
    EXAMPLE_THRESHOLD,
    MAX_TRACK_STEPS,
    FilterRequest,
    ParticlesRequest,
    PointsRequest,
    ThresholdRequest,
)
from labservice.settings import Settings

router = APIRouter(tags=["points"])

Registry = Annotated[DatasetRegistry, Depends(get_datasets)]
CallerDep = Annotated[Caller, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_BINARY = {
    "description": "JSON, or msgpack when Accept: application/msgpack (arrays as {dtype, shape, data}).",
    "content": {"application/msgpack": {}},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown dataset; the detail suggests close matches."},
    413: {"description": "Over this caller's points-per-request limit or the body size limit."},
    422: {"description": "Invalid input; the detail says what to change."},
    429: {"description": "Rate or concurrency limit; see Retry-After."},
}


def _responses(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    ok = {
        "description": _BINARY["description"],
        "content": {"application/json": {"example": example}, "application/msgpack": {}},
    }
    return {200: ok, **_ERRORS}


@router.post(
    "/datasets/{dataset_id}/points",
    operation_id="get_points",
    openapi_extra=openapi_body(PointsRequest, EXAMPLE_POINTS),
    responses=_responses(
        {"values": [[0.1, -0.2, 0.05]], "components": ["ux", "uy", "uz"], "times": [0.3], "clipped": [False]}
    ),
)
async def points(
    dataset_id: str, request: Request, registry: Registry, caller: CallerDep, settings: SettingsDep
) -> Response:
    """Values, gradients, Hessians or Laplacians of a variable at N points, at one time or a series."""
    ds = registry.get(dataset_id)
    body = await parse_request(request, PointsRequest, settings.max_body_bytes)
    request.state.cost = check_points(caller.limits, len(body.points), body.ntimes())
    result = await run_in_threadpool(
        ds.query_points,
        body.variable,
        body.points,
        time=body.time,
        times=None if body.times is None else body.times.as_tuple(),
        spatial=body.spatial,
        temporal=body.temporal,
        operator=body.operator,
    )
    return await respond(
        request,
        {
            "values": np.asarray(result.values),
            "components": list(result.components),
            "times": [float(t) for t in np.atleast_1d(result.times)],
            "series": body.times is not None,
            "clipped": np.asarray(result.clipped, dtype=bool),
        },
    )


@router.post(
    "/datasets/{dataset_id}/particles",
    operation_id="track_particles",
    openapi_extra=openapi_body(ParticlesRequest, EXAMPLE_PARTICLES),
    responses=_responses(
        {"positions": [[[0.1, 0.2, 0.3]], [[0.12, 0.21, 0.29]]], "times": [0.0, 0.05], "left_domain": [False]}
    ),
)
async def particles(
    dataset_id: str, request: Request, registry: Registry, caller: CallerDep, settings: SettingsDep
) -> Response:
    """Advect particles from t_start to t_end through the interpolated velocity (RK2 or RK4)."""
    ds = registry.get(dataset_id)
    body = await parse_request(request, ParticlesRequest, settings.max_body_bytes)
    request.state.cost = check_points(caller.limits, len(body.points), body.noutputs())
    if body.nsteps() > MAX_TRACK_STEPS:  # the work grows with the steps, not with the outputs
        raise LimitExceeded(
            f"dt = {body.dt:g} makes {body.nsteps()} integration steps, over the limit of {MAX_TRACK_STEPS} "
            "per request; use a larger dt or submit a particles job"
        )
    result = await run_in_threadpool(
        ds.track,
        body.points,
        body.t_start,
        body.t_end,
        body.dt,
        scheme=body.scheme,
        every=body.every,
        spatial=body.spatial,
        temporal=body.temporal,
        variable=body.variable,
    )
    if result.trajectory is not None:
        positions, times = result.trajectory, result.times
    else:  # no output interval: the start and the end
        positions = np.stack([body.points, result.positions])
        times = np.array([body.t_start, body.t_end])
    return await respond(
        request,
        {
            "positions": np.asarray(positions),
            "times": np.asarray(times, dtype=np.float64),
            "left_domain": np.asarray(result.left_domain, dtype=bool),
            "stop_time": np.asarray(result.stop_time, dtype=np.float64),
        },
    )


@router.post(
    "/datasets/{dataset_id}/filter",
    operation_id="box_filter",
    openapi_extra=openapi_body(FilterRequest, EXAMPLE_FILTER),
    responses=_responses({"values": [[0.1, -0.2, 0.05]], "components": ["ux", "uy", "uz"]}),
)
async def box_filter(
    dataset_id: str, request: Request, registry: Registry, caller: CallerDep, settings: SettingsDep
) -> Response:
    """Box-filtered values or FD4 gradients of the filtered field at N points (width in grid points)."""
    ds = registry.get(dataset_id)
    body = await parse_request(request, FilterRequest, settings.max_body_bytes)
    request.state.cost = check_points(caller.limits, len(body.points))
    values = await run_in_threadpool(
        ds.filter, body.variable, body.points, body.width, time=body.time, operator=body.operator
    )
    from labservice.dataset import component_names

    components = component_names(ds.meta.variables[body.variable].components, body.operator, body.variable)
    return await respond(request, {"values": np.asarray(values), "components": list(components)})


def _index_range(spec: str | list[int] | None, name: str) -> tuple[int, int] | None:
    """'start:stop' or [start, stop] -> (start, stop)."""
    if spec is None:
        return None
    parts = spec.split(":") if isinstance(spec, str) else list(spec)
    try:
        start, stop = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"{name} must be 'start:stop' grid indices (stop exclusive); got {spec!r}"
        ) from None
    return start, stop


def _box_nodes(meta: Any, ranges: dict[str, tuple[int, int] | None]) -> int:
    n = 1
    for name, r in ranges.items():
        n *= meta.grid.axis(name).size if r is None else max(r[1] - r[0], 0)
    return n


@router.post(
    "/datasets/{dataset_id}/threshold",
    operation_id="threshold",
    openapi_extra=openapi_body(ThresholdRequest, EXAMPLE_THRESHOLD),
    responses=_responses({"indices": [[3, 4, 5]], "positions": [[0.29, 0.39, 0.49]], "values": [7.2]}),
)
async def threshold(
    dataset_id: str, request: Request, registry: Registry, caller: CallerDep, settings: SettingsDep
) -> Response:
    """Grid nodes inside a box where a scalar of a variable (norm, vorticity, Q, ...) reaches a threshold."""
    ds = registry.get(dataset_id)
    body = await parse_request(request, ThresholdRequest, settings.max_body_bytes)
    ranges = {name: _index_range(getattr(body, name), name) for name in ("x", "y", "z")}
    nodes = _box_nodes(ds.meta, ranges)
    # Scanning a box reads it like a cutout of one component: the cutout limit applies.
    check_cutout_bytes(caller.limits, 4 * nodes, settings.sync_cutout_bytes, "use a smaller box")
    request.state.cost = nodes
    result = await run_in_threadpool(
        ds.threshold,
        body.variable,
        body.threshold,
        time=body.time,
        scalar=body.scalar,
        spatial=body.spatial,
        max_points=caller.limits.points_per_request,
        **ranges,
    )
    return await respond(
        request,
        {
            "indices": np.asarray(result.indices),
            "positions": np.asarray(result.positions),
            "values": np.asarray(result.values),
            "scalar": result.scalar,
            "threshold": float(result.threshold),
        },
    )
