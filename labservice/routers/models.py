"""Request bodies of the POST routes, validated by pydantic (the OpenAPI schemas come from here too)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

# The point and particle bodies are shared with the job kinds: they live in labservice.requests.
from labservice.requests import PointArray

# Integration steps one synchronous tracking request may take (|t_end - t_start| / dt); above: a job.
MAX_TRACK_STEPS = 100_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


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
