"""Cutouts (streamed in hdf5, netcdf, zarr, npy, msgpack or the XDMF sidecar) and PNG quick looks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from labservice.cutout.formats import FORMATS, check_format, default_name, open_cutout
from labservice.cutout.layout import layout_for
from labservice.cutout.quicklook import component_index, cutout_slice_png, plane_ranges
from labservice.cutout.region import plan_cutout, time_index
from labservice.encoding import StreamedResponse
from labservice.routers.deps import DatasetDep, LimitsDep, SettingsDep
from labservice.routers.params import CutoutQuery, SliceQuery

router = APIRouter(tags=["cutouts"])

def _job_hint(dataset_id: str, q: CutoutQuery) -> str:
    """The job request that asks for the same cutout (see the jobs API)."""
    ranges = "".join(f', "{k}": "{v}"' for k, v in (("x", q.x), ("y", q.y), ("z", q.z)) if v)
    return (
        f'POST /api/v1/jobs with {{"kind": "cutout", "dataset": "{dataset_id}", "variables": ["{q.variable}"], '
        f'"times": [{q.time}]{ranges}, "formats": ["hdf5"]}} using a token that allows jobs'
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
        413: {"description": "Over your synchronous cutout limit; the detail says how to submit a job."},
        422: {"description": "Bad range (stride 0, reversed, outside a non-periodic axis), time or format."},
    },
)
async def cutout(
    dataset_id: str,
    ds: DatasetDep,
    request: Request,
    limits: LimitsDep,
    q: Annotated[CutoutQuery, Depends()],
) -> Response:
    """A subvolume of one variable at one stored time, streamed in the requested format."""
    fmt = check_format(q.format)
    plan = plan_cutout(ds.meta, q.variable, q.x, q.y, q.z)
    t_index = time_index(ds.meta, q.time)
    limits.cutout(plan.nbytes, _job_hint(dataset_id, q))
    layout = layout_for(ds.reader, plan, t_index)
    # Encode up to the first piece (a file format: the whole file) in a worker thread; errors found while
    # starting still become a 4xx JSON answer.
    body = await run_in_threadpool(open_cutout, ds.reader, layout, fmt)
    info = FORMATS[fmt]
    filename = default_name(layout) + info.suffix
    return StreamedResponse(
        body.first,
        body.rest,
        body.length,
        media_type=info.media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        close=body.close,
    )


def _render_plane(ds: Any, plan: Any, t_index: int, normal: str, comp: int, options: dict[str, Any]) -> bytes:
    from labservice.cutout import read_cutout

    return cutout_slice_png(read_cutout(ds.reader, plan, t_index), comp, normal=normal, **options)


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
    ds: DatasetDep,
    request: Request,
    limits: LimitsDep,
    settings: SettingsDep,
    q: Annotated[SliceQuery, Depends()],
) -> Response:
    """A quick-look colour image of one plane of one component, with axes and a colour bar."""
    plan = plan_cutout(ds.meta, q.variable, **plane_ranges(ds.meta, q.axis, q.index))
    t_index = time_index(ds.meta, q.time)
    comp = component_index(plan.components, q.component)
    limits.cutout(plan.nbytes, "ask for a strided cutout instead")
    options = {"cmap": q.cmap, "vmin": q.vmin, "vmax": q.vmax, "width_px": q.width}
    options["renderer"] = settings.quicklook_renderer
    png = await run_in_threadpool(_render_plane, ds, plan, t_index, q.axis, comp, options)
    return Response(png, media_type="image/png")
