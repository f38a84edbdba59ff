"""Wiring the job engine into the app: built from the settings, started and stopped with the lifespan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labservice.jobs.engine import JobEngine
from labservice.jobs.kinds.branch import simulation_resolver


def engine_from_settings(settings: Any, datasets: Any = None) -> JobEngine:
    """Build the engine from :class:`labservice.settings.Settings` and the app's dataset registry."""
    data_dir = Path(settings.data_dir) if settings.data_dir else Path.cwd()
    scratch = settings.scratch_url or str(data_dir / "scratch")
    db = settings.job_db or (
        Path(scratch) / "jobs.sqlite" if "://" not in scratch else data_dir / "jobs.sqlite"
    )

    def resolve(dataset_id: str) -> tuple[str, dict[str, Any] | None]:
        ds = datasets.get(dataset_id)
        return ds.store.url, ds.store.storage_options

    return JobEngine(
        db,
        scratch,
        settings.scratch_options,
        scheduler=settings.dask_scheduler,
        resolve_dataset=resolve if datasets is not None else None,
        resolve_simulation=simulation_resolver(settings.data_dir),
        ttl_days=settings.job_ttl_days,
    )


def start_jobs(app: Any, settings: Any) -> JobEngine:
    """Lifespan hook: start the job engine and put it on ``app.state.jobs``."""
    engine = engine_from_settings(settings, getattr(app.state, "registry", None)).start()
    app.state.jobs = engine
    return engine


def stop_jobs(app: Any) -> None:
    """Lifespan hook: stop the engine (running jobs resume at the next start)."""
    engine = getattr(app.state, "jobs", None)
    if engine is not None:
        engine.stop()
        app.state.jobs = None
