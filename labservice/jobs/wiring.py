"""Wiring the job engine into the app and into `labservice engine`: built from the settings.

``LABSERVICE_ENGINE=embedded`` (the default): the app's lifespan starts a :class:`JobEngine` in the
server process, as before. ``external``: the app only records and reads jobs (a :class:`JobFront`, no
Dask), and `labservice engine` processes run them (:mod:`labservice.jobs.service`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labservice.errors import InvalidInput
from labservice.jobs.engine import JobEngine
from labservice.jobs.front import JobFront
from labservice.jobs.kinds.branch import simulation_resolver

# The sizing knobs settings.job_options may set (JobEngine's parameters of the same names).
SIZING = ("shard_edge", "chunk_edge", "task_bytes", "points_per_task", "track_segment_steps")
ENGINE_ONLY = ("retries",)


def _registry_where(settings: Any) -> str:
    """The job registry: the platform database (or the SQLite file the settings name)."""
    return str(settings.jobs_database_url())


def _common(settings: Any, datasets: Any, engine: bool) -> dict[str, Any]:
    """The arguments JobFront and JobEngine share, from the settings."""
    options = dict(getattr(settings, "job_options", None) or {})
    allowed = SIZING + (ENGINE_ONLY if engine else ())
    unknown = sorted(set(options) - set(SIZING + ENGINE_ONLY))
    if unknown:
        raise InvalidInput(
            f"LABSERVICE_JOB_OPTIONS has unknown keys {unknown}; "
            f"the keys are {', '.join(SIZING + ENGINE_ONLY)}"
        )
    data_dir = Path(settings.data_dir) if settings.data_dir else Path.cwd()
    resolve = datasets if callable(datasets) else _registry_resolver(datasets)
    return {
        "scratch_url": settings.scratch_url or str(data_dir / "scratch"),
        "scratch_options": settings.scratch_options,
        "resolve_dataset": resolve,
        "resolve_simulation": simulation_resolver(settings.data_dir),
        "ttl_days": settings.job_ttl_days,
        "lease_seconds": getattr(settings, "engine_lease_seconds", 10.0),
        **{k: v for k, v in options.items() if k in allowed},
    }


def _registry_resolver(datasets: Any) -> Any:
    """Dataset id -> (url, storage_options) through the app's opened datasets (None: ids are URLs)."""
    if datasets is None:
        return None

    def resolve(dataset_id: str) -> tuple[str, dict[str, Any] | None]:
        ds = datasets.get(dataset_id)
        return ds.store.url, ds.store.storage_options

    return resolve


def settings_resolver(settings: Any) -> Any:
    """Dataset id -> (url, storage_options) from the settings alone (the engine service opens no datasets).

    Looks again when an id is unknown, so datasets added while the engine runs are found.
    """
    from labservice.app import find_datasets
    from labservice.datasets.catalog import CatalogURL
    from labservice.errors import NotFound

    found: dict[str, Any] = {}

    def resolve(dataset_id: str) -> tuple[str, dict[str, Any] | None]:
        if dataset_id not in found:
            found.update(_density_urls(settings.data_dir))  # as the app serves them (lifespan)
            found.update(find_datasets(settings))
        if dataset_id not in found:
            known = ", ".join(sorted(found)) or "none"
            raise NotFound(f"unknown dataset {dataset_id!r}; this engine knows {known}")
        url = found[dataset_id]
        return str(url), url.storage_options if isinstance(url, CatalogURL) else None

    return resolve


def _density_urls(data_dir: Any) -> dict[str, str]:
    """``{sim-density: path}`` of each cosmology simulation's density field, found without opening them."""
    if data_dir is None:
        return {}
    from labservice.datasets.catalog import discover_simulations

    sims = discover_simulations(data_dir)
    found = {f"{sim}-density": Path(path) / "density.zarr" for sim, path in sims.items()}
    return {k: str(v) for k, v in found.items() if v.is_dir()}


def engine_from_settings(settings: Any, datasets: Any = None, **overrides: Any) -> JobEngine:
    """Build the engine from :class:`labservice.settings.Settings` and the app's dataset registry (or a
    resolver function)."""
    engine = JobEngine(
        _registry_where(settings),
        scheduler=settings.dask_scheduler,
        poll_seconds=getattr(settings, "engine_poll_seconds", 0.5),
        max_jobs=getattr(settings, "engine_max_jobs", 16),
        **_common(settings, datasets, engine=True) | overrides,
    )
    engine.mydb = mydb_from_settings(settings)
    return engine


def front_from_settings(settings: Any, datasets: Any = None) -> JobFront:
    """The API side alone (``LABSERVICE_ENGINE=external``): record and read jobs, no Dask."""
    front = JobFront(_registry_where(settings), **_common(settings, datasets, engine=False))
    front.mydb = mydb_from_settings(settings)
    return front


def mydb_from_settings(settings: Any) -> Any:
    """The MyDB jobs read and write (points_table, the sql kind); None without a platform database."""
    from labservice.datasets.mydb import MyDB, folder_catalogs

    if not hasattr(settings, "tokens_database_url"):
        return None
    return MyDB.from_settings(settings, folder_catalogs(settings.data_dir))


def start_jobs(app: Any, settings: Any) -> JobFront:
    """Lifespan hook: put the job engine (external engine: its API side alone) on ``app.state.jobs``."""
    datasets = getattr(app.state, "registry", None)
    if getattr(settings, "engine", "embedded") == "external":
        jobs: JobFront = front_from_settings(settings, datasets)
    else:
        jobs = engine_from_settings(settings, datasets).start()
    app.state.jobs = jobs
    return jobs


def stop_jobs(app: Any) -> None:
    """Lifespan hook: stop the engine (running jobs resume at the next start, or on another engine)."""
    engine = getattr(app.state, "jobs", None)
    if engine is not None:
        engine.stop()
        app.state.jobs = None
