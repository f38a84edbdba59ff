"""Point queries: values at points, particle tracking, box filters and thresholds.

Each route parses the body (JSON or msgpack), checks the caller's limits, runs the in-process engine in a
worker thread, and encodes the result the way Accept asks.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from labservice.cutout.region import parse_range
from labservice.encoding import openapi_body, respond
from labservice.errors import LimitExceeded
from labservice.interpolation.operators import component_names
from labservice.requests import ParticlesRequest, PointsRequest
from labservice.routers.deps import DatasetDep, LimitsDep, body_of
from labservice.routers.models import (
    EXAMPLE_FILTER,
    EXAMPLE_PARTICLES,
    EXAMPLE_POINTS,
    EXAMPLE_THRESHOLD,
    MAX_TRACK_STEPS,
    FilterRequest,
    ThresholdRequest,
)
from labservice.storage.metadata import AXES

router = APIRouter(tags=["points"])

PointsBody = Annotated[PointsRequest, body_of(PointsRequest)]
ParticlesBody = Annotated[ParticlesRequest, body_of(ParticlesRequest)]
FilterBody = Annotated[FilterRequest, body_of(FilterRequest)]
ThresholdBody = Annotated[ThresholdRequest, body_of(ThresholdRequest)]

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
async def points(ds: DatasetDep, body: PointsBody, limits: LimitsDep, request: Request) -> Response:
    """Values, gradients, Hessians or Laplacians of a variable at N points, at one time or a series."""
    limits.points(len(body.points), body.ntimes())
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
async def particles(ds: DatasetDep, body: ParticlesBody, limits: LimitsDep, request: Request) -> Response:
    """Advect particles from t_start to t_end through the interpolated velocity (RK2 or RK4)."""
    limits.points(len(body.points), body.noutputs())
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
async def box_filter(ds: DatasetDep, body: FilterBody, limits: LimitsDep, request: Request) -> Response:
    """Box-filtered values or FD4 gradients of the filtered field at N points (width in grid points)."""
    limits.points(len(body.points))
    values = await run_in_threadpool(
        ds.filter, body.variable, body.points, body.width, time=body.time, operator=body.operator
    )
    components = component_names(ds.meta.variables[body.variable].components, body.operator, body.variable)
    return await respond(request, {"values": np.asarray(values), "components": list(components)})


@router.post(
    "/datasets/{dataset_id}/threshold",
    operation_id="threshold",
    openapi_extra=openapi_body(ThresholdRequest, EXAMPLE_THRESHOLD),
    responses=_responses({"indices": [[3, 4, 5]], "positions": [[0.29, 0.39, 0.49]], "values": [7.2]}),
)
async def threshold(ds: DatasetDep, body: ThresholdBody, limits: LimitsDep, request: Request) -> Response:
    """Grid nodes inside a box where a scalar of a variable (norm, vorticity, Q, ...) reaches a threshold."""
    ranges = {name: parse_range(getattr(body, name), name, ds.meta.grid.axis(name)) for name in AXES}
    nodes = math.prod(r.count for r in ranges.values())
    # Scanning a box reads it like a cutout of one component: the cutout limit applies.
    limits.cutout(4 * nodes, "use a smaller box", cost=nodes)
    result = await run_in_threadpool(
        ds.threshold,
        body.variable,
        body.threshold,
        time=body.time,
        scalar=body.scalar,
        spatial=body.spatial,
        max_points=limits.caller.limits.points_per_request,
        **{name: (r.start, r.stop, r.step) for name, r in ranges.items()},
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
