"""Request bodies of the POST routes, validated by pydantic (the OpenAPI schemas come from here too)."""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from labservice.encoding import as_points

POINTS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
    "minItems": 1,
    "description": "N x 3 coordinates [x, y, z] in physical units; in msgpack also "
    "{dtype: 'float64', shape: [N, 3], data: <bytes>}",
}
# An (N, 3) float64 array: nested lists in JSON, {dtype, shape, data} in msgpack.
PointArray = Annotated[
    np.ndarray,
    BeforeValidator(as_points),
    PlainSerializer(lambda a: a.tolist()),
    WithJsonSchema(POINTS_SCHEMA),
]


# Counts past this are refused by every limit anyway; capping keeps int() finite for tiny steps.
_HUGE_COUNT = 10**15
# Integration steps one synchronous tracking request may take (|t_end - t_start| / dt); above: a job.
MAX_TRACK_STEPS = 100_000


def steps_in(span: float, step: float) -> int:
    """floor(span / step) (to within 1e-9 of a step), capped at 10**15 so that a tiny step cannot overflow."""
    ratio = abs(span) / step
    if not math.isfinite(ratio) or ratio > _HUGE_COUNT:
        return _HUGE_COUNT
    return int(math.floor(ratio + 1e-9))


class TimeSeries(BaseModel):
    """Stored or interpolated times start, start + step, ... up to end (inclusive)."""

    model_config = ConfigDict(extra="forbid")

    start: FiniteFloat
    end: FiniteFloat
    step: FiniteFloat = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> TimeSeries:
        if self.end < self.start:
            raise ValueError(f"times.end ({self.end}) must not be before times.start ({self.start})")
        return self

    def count(self) -> int:
        """How many times the series holds (rounding as the engine does, to within 1e-9 of a step)."""
        return steps_in(self.end - self.start, self.step) + 1

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.start, self.end, self.step)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class PointsRequest(_Body):
    """Values (or derivatives) of one variable at N points, at one time or a series of times."""

    variable: str = Field(description="Variable name, e.g. 'velocity'.")
    points: PointArray
    time: FiniteFloat | None = Field(default=None, description="One time (physical units).")
    times: TimeSeries | None = Field(default=None, description="A series of times instead of one.")
    spatial: str = Field(default="lag4", description="Spatial method, e.g. none, lag4, lag6, m2q8, fd4noint.")
    temporal: str = Field(default="none", description="Temporal method: none or pchip.")
    operator: str = Field(default="field", description="field, gradient, hessian or laplacian.")

    @model_validator(mode="after")
    def _one_time(self) -> PointsRequest:
        if (self.time is None) == (self.times is None):
            raise ValueError("give exactly one of 'time' (a number) or 'times' ({start, end, step})")
        return self

    def ntimes(self) -> int:
        return 1 if self.times is None else self.times.count()


class ParticlesRequest(_Body):
    """Advect particles through the interpolated velocity field."""

    points: PointArray
    t_start: FiniteFloat
    t_end: FiniteFloat
    dt: FiniteFloat = Field(gt=0, description="Integration time step.")
    scheme: str = Field(default="rk2", description="rk2 or rk4.")
    every: FiniteFloat | None = Field(
        default=None, gt=0, description="Output interval; default: start and end."
    )
    spatial: str = "lag4"
    temporal: str = "pchip"
    variable: str = Field(default="velocity", description="The 3-component velocity to advect with.")

    def noutputs(self) -> int:
        """Positions returned per particle (the cost is points x outputs)."""
        if self.every is None:
            return 2
        return steps_in(self.t_end - self.t_start, self.every) + 2

    def nsteps(self) -> int:
        """Integration steps from t_start to t_end."""
        return steps_in(self.t_end - self.t_start, self.dt) + 1


class FilterRequest(_Body):
    """Box-filtered values (or gradients) of one variable at N points, at a stored time."""

    variable: str
    points: PointArray
    time: FiniteFloat
    width: int = Field(ge=1, description="Filter width in grid points (odd).")
    operator: str = Field(default="field", description="field or gradient (FD4 of the filtered field).")


IndexRange = Annotated[
    str | list[int] | None,
    Field(
        description="start:stop grid indices (stop exclusive; wraps on periodic axes); omit for the whole axis."
    ),
]


class ThresholdRequest(_Body):
    """Grid nodes inside a box where a scalar of a variable reaches a threshold."""

    variable: str
    time: FiniteFloat
    threshold: FiniteFloat
    scalar: str = Field(
        default="norm",
        description="norm, value, or from the velocity gradient: vorticity, q_criterion, r_invariant, "
        "enstrophy, dissipation, lambda2.",
    )
    x: IndexRange = None
    y: IndexRange = None
    z: IndexRange = None
    spatial: str = Field(default="fd4noint", description="Derivative method for gradient scalars.")


EXAMPLE_POINTS: dict[str, Any] = {
    "one time": {
        "variable": "velocity",
        "time": 0.3,
        "points": [[0.1, 0.2, 0.3], [3.0, 1.5, 6.0]],
        "spatial": "lag6",
        "temporal": "pchip",
        "operator": "field",
    },
    "gradient": {"variable": "velocity", "time": 0.3, "points": [[0.1, 0.2, 0.3]], "operator": "gradient"},
    "time series": {
        "variable": "pressure",
        "times": {"start": 0.0, "end": 0.5, "step": 0.1},
        "points": [[0.1, 0.2, 0.3]],
    },
}
EXAMPLE_PARTICLES: dict[str, Any] = {
    "rk2": {"points": [[0.1, 0.2, 0.3]], "t_start": 0.0, "t_end": 0.5, "dt": 0.005, "every": 0.05},
}
EXAMPLE_FILTER: dict[str, Any] = {
    "box filter": {"variable": "velocity", "time": 0.3, "points": [[1.0, 2.0, 3.0]], "width": 5},
}
EXAMPLE_THRESHOLD: dict[str, Any] = {
    "vorticity": {
        "variable": "velocity",
        "time": 0.3,
        "threshold": 5.0,
        "scalar": "vorticity",
        "x": "0:16",
        "y": "0:16",
        "z": "0:16",
    },
}
