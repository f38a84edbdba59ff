"""Cutouts (streamed in hdf5, netcdf, zarr, npy, msgpack or the XDMF sidecar) and PNG quick looks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from labservice.cutout.formats import FORMATS, check_format, default_name, stream_cutout
from labservice.cutout.layout import layout_for
from labservice.cutout.region import plan_cutout, time_index
from labservice.limits import Caller, check_cutout_bytes
from labservice.routers.deps import DatasetRegistry, get_caller, get_datasets, get_settings
from labservice.settings import Settings

router = APIRouter(tags=["cutouts"])

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
        description="Output format: hdf5 (coordinates as dimension scales), zip (hdf5 + XDMF sidecar), xdmf, "
        "netcdf, zarr (zipped), npy or msgpack.",
        examples=["hdf5"],
    ),
]


def _job_hint(
    dataset_id: str, variable: str, time: float, x: str | None, y: str | None, z: str | None
) -> str:
    """The job request that asks for the same cutout (see the jobs API)."""
    ranges = "".join(f', "{k}": "{v}"' for k, v in (("x", x), ("y", y), ("z", z)) if v)
    return (
        f'POST /api/v1/jobs with {{"kind": "cutout", "dataset": "{dataset_id}", "variables": ["{variable}"], '
        f'"times": [{time}]{ranges}, "formats": ["hdf5"]}} using a token that allows jobs'
    )


@router.get(
    "/datasets/{dataset_id}/cutout",
    operation_id="get_cutout",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The cutout file, streamed.",
            "content": {info.media_type: {} for info in FORMATS.values()},
        },
        404: {"description": "Unknown dataset or variable; the detail suggests close matches."},
        413: {"description": "Over the synchronous cutout limit; the detail says how to submit a job."},
        422: {"description": "Bad range (stride 0, reversed, outside a non-periodic axis), time or format."},
    },
)
async def cutout(
    dataset_id: str,
    request: Request,
    registry: Annotated[DatasetRegistry, Depends(get_datasets)],
    caller: Annotated[Caller, Depends(get_caller)],
    settings: Annotated[Settings, Depends(get_settings)],
    variable: Variable,
    time: Time,
    x: XRange = None,
    y: YRange = None,
    z: ZRange = None,
    format: Format = "hdf5",
) -> StreamingResponse:
    """A subvolume of one variable at one stored time, streamed in the requested format."""
    ds = registry.get(dataset_id)
    fmt = check_format(format)
    plan = plan_cutout(ds.meta, variable, x, y, z)
    t_index = time_index(ds.meta, time)
    check_cutout_bytes(
        caller.limits, plan.nbytes, settings.sync_cutout_bytes, _job_hint(dataset_id, variable, time, x, y, z)
    )
    request.state.cost = plan.nbytes
    layout = layout_for(ds.reader, plan, t_index)
    stream = stream_cutout(ds.reader, layout, fmt)
    # Pull the first piece here, so that errors found while starting still become a 4xx JSON answer.
    first = await run_in_threadpool(next, stream, b"")
    info = FORMATS[fmt]

    def pieces() -> Any:
        yield first
        yield from stream

    filename = default_name(layout) + info.suffix
    return StreamingResponse(
        pieces(),
        media_type=info.media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


_PLANE_AXES = {"z": ("x", "y"), "y": ("x", "z"), "x": ("y", "z")}  # normal -> (horizontal, vertical)
_MAX_PLANE_EDGE = 1024  # larger planes are strided down to about this many pixels per edge


def _plane_ranges(meta: Any, normal: str, index: int) -> dict[str, str]:
    """Index ranges for one plane: the whole in-plane axes (strided if huge), one index along the normal."""
    ranges = {normal: f"{index}:{index + 1}"}
    for name in _PLANE_AXES[normal]:
        n = meta.grid.axis(name).size
        ranges[name] = f"0:{n}:{max(1, -(-n // _MAX_PLANE_EDGE))}"
    return ranges


def _component_index(components: tuple[str, ...], component: str) -> int:
    from labservice.errors import InvalidInput, unknown

    if component in components:
        return components.index(component)
    if component.isdigit() and int(component) < len(components):
        return int(component)
    raise unknown("component", component, components, error=InvalidInput)


def _render_plane(ds: Any, plan: Any, t_index: int, normal: str, comp: int, options: dict[str, Any]) -> bytes:
    from labservice.cutout import read_cutout
    from labservice.cutout.quicklook import render_slice_png

    cut = read_cutout(ds.reader, plan, t_index)
    axis_pos = {"z": 0, "y": 1, "x": 2}[normal]
    plane = np.take(cut.data[..., comp], 0, axis=axis_pos)  # rows follow the vertical axis
    hname, vname = _PLANE_AXES[normal]
    h, v = getattr(cut, hname), getattr(cut, vname)
    uniform = ds.meta.grid.axis(hname).uniform and ds.meta.grid.axis(vname).uniform
    where = float(getattr(cut, normal)[0])
    title = (
        f"{ds.meta.id} {plan.variable} {plan.components[comp]}, {normal} = {where:.4g}, t = {cut.time:.4g}"
    )
    return render_slice_png(
        plane,
        extent=(float(h[0]), float(h[-1]), float(v[0]), float(v[-1])),
        title=title,
        units=plan.units,
        xlabel=hname,
        ylabel=vname,
        coords=None if uniform else (h, v),
        **options,
    )


@router.get(
    "/datasets/{dataset_id}/slice.png",
    operation_id="get_slice_png",
    response_class=Response,
    responses={
        200: {"description": "A PNG image with axes and a colour bar.", "content": {"image/png": {}}},
        404: {"description": "Unknown dataset or variable; the detail suggests close matches."},
        422: {"description": "Bad plane index, component, colour map or colour limits."},
    },
)
async def slice_png(
    dataset_id: str,
    request: Request,
    registry: Annotated[DatasetRegistry, Depends(get_datasets)],
    caller: Annotated[Caller, Depends(get_caller)],
    settings: Annotated[Settings, Depends(get_settings)],
    variable: Variable,
    time: Time,
    axis: Annotated[Literal["x", "y", "z"], Query(description="Normal of the plane.")] = "z",
    index: Annotated[int, Query(description="Grid index of the plane along its normal (0-based).")] = 0,
    component: Annotated[str, Query(description="Component name or number.", examples=["ux"])] = "0",
    cmap: Annotated[str, Query(description="RdBu_r, viridis, magma, cividis or gray.")] = "RdBu_r",
    vmin: Annotated[float | None, Query(description="Lower colour limit.")] = None,
    vmax: Annotated[float | None, Query(description="Upper colour limit.")] = None,
    width: Annotated[int, Query(ge=64, le=4096, description="Image width in pixels.")] = 720,
) -> Response:
    """A quick-look colour image of one plane of one component, with axes and a colour bar."""
    ds = registry.get(dataset_id)
    plan = plan_cutout(ds.meta, variable, **_plane_ranges(ds.meta, axis, index))
    t_index = time_index(ds.meta, time)
    comp = _component_index(plan.components, component)
    check_cutout_bytes(
        caller.limits, plan.nbytes, settings.sync_cutout_bytes, "ask for a strided cutout instead"
    )
    request.state.cost = plan.nbytes
    options = {"cmap": cmap, "vmin": vmin, "vmax": vmax, "width_px": width}
    png = await run_in_threadpool(_render_plane, ds, plan, t_index, axis, comp, options)
    return Response(png, media_type="image/png")
