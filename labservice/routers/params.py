"""Query-parameter groups shared by routes, as titiler's dependency dataclasses: each parameter is declared
once, with its description, and keeps its place in OpenAPI. A route takes a group as
``q: Annotated[CutoutQuery, Depends()]``.

No ``from __future__ import annotations`` here: FastAPI reads a dataclass's parameters from its generated
``__init__``, whose string annotations it could not resolve.
"""

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Query

from labservice.cutout.formats import FORMATS, accepted_names

_RANGE_HELP = (
    "Grid indices start:stop[:step], 0-based, stop exclusive (e.g. 0:64:2). Omit for the whole axis. "
    "On periodic axes start may be negative and stop may pass the end (indices wrap)."
)
Variable = Annotated[str, Query(description="Variable name.", examples=["velocity"])]
Time = Annotated[
    float, Query(description="A stored time (cutouts are not interpolated in time).", examples=[0.0])
]
XRange = Annotated[str | None, Query(description=_RANGE_HELP, examples=["0:64:2"])]
YRange = Annotated[str | None, Query(description=_RANGE_HELP, examples=["0:64:2"])]
ZRange = Annotated[str | None, Query(description=_RANGE_HELP, examples=["0:32"])]
Format = Annotated[
    str,
    Query(
        description="Output format: " + ", ".join(f.description for f in FORMATS.values()) + ".",
        examples=["hdf5"],
        json_schema_extra={"enum": accepted_names()},  # the registry's names and aliases
    ),
]


@dataclass
class FieldAtTime:
    """One variable at one stored time."""

    variable: Variable
    time: Time


@dataclass
class CutoutQuery(FieldAtTime):
    """A subvolume by grid-index ranges, and the file format."""

    x: XRange = None
    y: YRange = None
    z: ZRange = None
    format: Format = "hdf5"


@dataclass
class SliceQuery(FieldAtTime):
    """One plane of one component, and how to draw it."""

    axis: Annotated[Literal["x", "y", "z"], Query(description="Normal of the plane.")] = "z"
    index: Annotated[int, Query(description="Grid index of the plane along its normal (0-based).")] = 0
    component: Annotated[str, Query(description="Component name or number.", examples=["ux"])] = "0"
    cmap: Annotated[str, Query(description="RdBu_r, viridis, magma, cividis or gray.")] = "RdBu_r"
    vmin: Annotated[float | None, Query(description="Lower colour limit.")] = None
    vmax: Annotated[float | None, Query(description="Upper colour limit.")] = None
    width: Annotated[int, Query(ge=64, le=4096, description="Image width in pixels.")] = 720


@dataclass
class Sphere:
    """The sphere around a halo (or each branch node) and the particle fields to return."""

    radius: Annotated[float, Query(gt=0, description="Sphere radius, in units of R200c or Mpc/h.")] = 2.0
    units: Annotated[
        str, Query(description="r200 (times the halo's, or each branch node's, R200c) or mpc (Mpc/h).")
    ] = "r200"
    particle_fields: Annotated[
        str | None, Query(alias="fields", description="Coordinates,Velocities,ParticleIDs (default all).")
    ] = None

    @property
    def names(self) -> list[str] | None:
        """The particle fields asked for; None for all."""
        if self.particle_fields is None or not self.particle_fields.strip():
            return None
        return [v.strip() for v in self.particle_fields.split(",") if v.strip()]


@dataclass
class HaloCutoutQuery(Sphere):
    format: Annotated[
        str | None, Query(description="hdf5, msgpack or npz; default from Accept, else hdf5.")
    ] = None


@dataclass
class BranchCutoutQuery(Sphere):
    missing: Annotated[
        str, Query(description="With units=r200, nodes without R200c: error (422) or skip them.")
    ] = "error"
    format: Annotated[str | None, Query(description="hdf5 or msgpack; default from Accept, else hdf5.")] = None
