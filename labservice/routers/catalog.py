"""The dataset list and each dataset's full metadata, with what this caller may ask for."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from labservice.cutout.formats import FORMATS
from labservice.errors import unknown
from labservice.routers.deps import CallerDep, RegistryDep, SettingsDep, SimulationsDep
from labservice.storage.metadata import DatasetMeta

router = APIRouter(tags=["datasets"])

_SUMMARY_EXAMPLE = {
    "id": "isotropic64",
    "title": "Forced isotropic turbulence, 64^3 demo",
    "kind": "field",
    "grid": {"shape": [64, 64, 64], "periodic": [True, True, True]},
    "variables": ["pressure", "velocity"],
    "times": {"count": 64, "first": 0.0, "last": 0.63},
}


def capabilities() -> dict[str, Any]:
    """Spatial and temporal methods and operators the engine supports."""
    from labservice.facade import DERIVED, OPERATORS, SCALARS, SCHEMES, TEMPORAL_METHODS
    from labservice.interpolation.weights import METHODS

    spatial = {
        name: {
            "width": m.width,
            "max_derivative": m.max_derivative,
            "uniform_axes_only": m.uniform_only,
            "order": m.order,
            "description": m.description,
        }
        for name, m in METHODS.items()
    }
    return {
        "spatial": spatial,
        "temporal": list(TEMPORAL_METHODS),
        "operators": list(OPERATORS),
        "derived": list(DERIVED),
        "threshold_scalars": list(SCALARS),
        "tracking_schemes": list(SCHEMES),
        "cutout_formats": list(FORMATS),
    }


def grid_summary(meta: DatasetMeta) -> dict[str, Any]:
    """Shape, periodicity and extent of each axis."""
    axes = [meta.grid.axis(a) for a in ("x", "y", "z")]
    return {
        "shape": list(meta.grid.shape),
        "periodic": [a.periodic for a in axes],
        "uniform": [a.uniform for a in axes],
        "bounds": [list(a.bounds) for a in axes],
    }


def dataset_summary(dataset_id: str, meta: DatasetMeta) -> dict[str, Any]:
    """The listing entry of a dataset served under ``dataset_id`` (a catalog may rename it)."""
    return {
        "id": dataset_id,
        "title": meta.title,
        "kind": meta.kind,
        "grid": grid_summary(meta),
        "variables": sorted(meta.variables),
        "times": {"count": len(meta.times), "first": meta.times[0], "last": meta.times[-1]},
    }


@router.get(
    "/datasets",
    operation_id="list_datasets",
    responses={200: {"content": {"application/json": {"example": {"datasets": [_SUMMARY_EXAMPLE]}}}}},
)
def list_datasets(registry: RegistryDep, sims: SimulationsDep) -> dict[str, Any]:
    """Every dataset served: id, title, kind, grid summary, variables and time range."""
    fields = [dataset_summary(ds_id, ds.meta) for ds_id, ds in registry.items()]
    # Cosmology simulations (kind "cosmology") are listed with their own summary.
    return {"datasets": fields + [sim.summary() for _, sim in sims.items()]}


@router.get(
    "/datasets/{dataset_id}",
    operation_id="get_dataset",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        **_SUMMARY_EXAMPLE,
                        "metadata": {
                            "grid": {"x": {"size": 64, "periodic": True, "start": 0.0, "step": 0.098}}
                        },
                        "methods": {"spatial": {"lag4": {"width": 4}}, "temporal": ["none", "pchip"]},
                        "limits": {"points_per_request": 4096, "max_cutout_bytes": 16777216},
                    }
                }
            }
        },
        404: {"description": "Unknown dataset; the detail suggests close matches."},
    },
)
def get_dataset(
    dataset_id: str,
    request: Request,
    registry: RegistryDep,
    caller: CallerDep,
    settings: SettingsDep,
    sims: SimulationsDep,
) -> dict[str, Any]:
    """Full metadata (grid, times, variables, units), supported methods and operators, and your limits."""
    limits = caller.limits.as_dict()
    limits["max_cutout_bytes"] = min(int(limits["max_cutout_bytes"]), settings.sync_cutout_bytes)
    limits["max_body_bytes"] = settings.max_body_bytes
    if dataset_id in sims and dataset_id not in registry.ids():
        caller_info = {"name": caller.name if caller.token_id else "public", "token_id": caller.token_id}
        return {**sims.get(dataset_id).summary(), "caller": caller_info, "limits": limits}
    if dataset_id not in registry.ids() and dataset_id not in registry.failed:
        raise unknown("dataset", dataset_id, [*registry.ids(), *sims.ids()])
    meta = registry.get(dataset_id).meta
    return {
        **dataset_summary(dataset_id, meta),
        "metadata": meta.model_dump(mode="json"),
        "methods": capabilities(),
        "caller": {"name": caller.name if caller.token_id else "public", "token_id": caller.token_id},
        "limits": limits,
    }
