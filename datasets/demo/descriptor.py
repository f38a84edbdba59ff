"""The ingest descriptor both field demos write: velocity and pressure from per-time-step HDF5 files."""

from __future__ import annotations

from typing import Any


def flow_descriptor(
    dataset_id: str,
    title: str,
    description: str,
    grid: dict[str, Any],
    times: list[float],
    store_url: str,
    files: str,
    velocity: tuple[str, dict[str, Any]],
    pressure: tuple[str, dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A descriptor (as YAML-ready dict) for a flow with ``velocity`` (ux, uy, uz) and ``pressure`` (p).

    ``velocity`` and ``pressure`` are ``(units, source keys beyond files)``, e.g.
    ``("L/T", {"datasets": ["/u", "/v", "/w"], "order": "zyx"})``.
    """
    (u_units, u_source), (p_units, p_source) = velocity, pressure
    return {
        "id": dataset_id,
        "title": title,
        "description": description,
        "grid": grid,
        "times": times,
        "variables": {
            "velocity": {"components": ["ux", "uy", "uz"], "units": u_units, "source": {"files": files, **u_source}},
            "pressure": {"components": ["p"], "units": p_units, "source": {"files": files, **p_source}},
        },
        "store": store_url,
        "chunks": [32, 32, 32],
        "shards": [256, 256, 256],
        "extra": extra,
    }
