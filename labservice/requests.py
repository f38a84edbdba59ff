"""The request bodies of point queries and particle tracking: one model each, for routes and jobs alike.

``PointsQuery`` and ``ParticlesQuery`` hold what a query asks for. The synchronous routes add the
``points`` (:class:`PointsRequest`, :class:`ParticlesRequest`); a job adds its ``kind`` and ``dataset``
and gets its points beside the body (:class:`PointsJobRequest`, :class:`ParticlesJobRequest`). So both
paths accept the same fields, spellings and defaults, and a rule changes in one place.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

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

from labservice.interpolation.engine import as_points
from labservice.interpolation.temporal import MAX_SERIES, steps_in

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
    BeforeValidator(partial(as_points, strict=True)),  # raises InvalidInput: 422 naming points
    PlainSerializer(lambda a: a.tolist()),
    WithJsonSchema(POINTS_SCHEMA),
]
MAX_JOB_STEPS = 10_000_000  # integration steps of one particles job (a long run goes in time segments)


class TimeSeries(BaseModel):
    """Stored or interpolated times start, start + step, ... up to end (inclusive)."""

    model_config = ConfigDict(extra="forbid")

    start: FiniteFloat
    end: FiniteFloat
    step: FiniteFloat = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_triple(cls, value: Any) -> Any:
        # Jobs and the Python client send [start, end, step]; the routes document {start, end, step}.
        if isinstance(value, list | tuple):
            if len(value) != 3:
                raise ValueError(f"times must be {{start, end, step}} or [start, end, step]; got {value!r}")
            return dict(zip(("start", "end", "step"), value, strict=True))
        return value

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


class PointsQuery(_Body):
    """Values (or derivatives) of one variable at points, at one time or a series of times."""

    variable: str = Field(description="Variable name, e.g. 'velocity'.")
    time: FiniteFloat | None = Field(default=None, description="One time (physical units).")
    times: TimeSeries | None = Field(
        default=None,
        description="A series of times instead of one: {start, end, step} or [start, end, step].",
    )
    spatial: str = Field(default="lag4", description="Spatial method, e.g. none, lag4, lag6, m2q8, fd4noint.")
    temporal: str = Field(default="none", description="Temporal method: none or pchip.")
    operator: str = Field(default="field", description="field, gradient, hessian or laplacian.")

    @model_validator(mode="after")
    def _one_time(self) -> PointsQuery:
        if (self.time is None) == (self.times is None):
            raise ValueError("give exactly one of 'time' (a number) or 'times' ({start, end, step})")
        return self

    def ntimes(self) -> int:
        return 1 if self.times is None else self.times.count()

    def asked_times(self) -> list[float]:
        """The first and last time asked for (to check against the stored range)."""
        return [self.time] if self.times is None else [self.times.start, self.times.end]  # type: ignore[list-item]


class PointsRequest(PointsQuery):
    """Values (or derivatives) of one variable at N points, at one time or a series of times."""

    points: PointArray


class PointsJobRequest(PointsQuery):
    """A points query as a batch job (the points are sent beside the body, as an (N, 3) array, or read from a
    MyDB table with columns x, y, z)."""

    kind: Literal["points"] = "points"
    dataset: str = Field(description="Dataset id.")
    points_table: str | None = Field(
        default=None, max_length=200, examples=["mydb.sensors"],
        description="Instead of points: a MyDB table (mydb.NAME, or OWNER.NAME shared with you) with columns x, y, z.",
    )


class ParticlesQuery(_Body):
    """Advect particles through the interpolated velocity field."""

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


class ParticlesRequest(ParticlesQuery):
    """Advect N particles through the interpolated velocity field."""

    points: PointArray


class ParticlesJobRequest(ParticlesQuery):
    """Particle tracking as a batch job: up to 10^7 steps, run in time segments that resume."""

    kind: Literal["particles"] = "particles"
    dataset: str = Field(description="Dataset id.")

    @model_validator(mode="after")
    def _bounded(self) -> ParticlesJobRequest:
        if self.nsteps() - 1 > MAX_JOB_STEPS:
            raise ValueError(f"dt = {self.dt:g} makes over {MAX_JOB_STEPS} steps; use a larger dt")
        if self.every is not None and self.noutputs() - 2 > MAX_SERIES:
            raise ValueError(f"every = {self.every:g} keeps over {MAX_SERIES} positions; use a larger every")
        return self
