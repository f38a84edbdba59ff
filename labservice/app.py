"""The web service: an app factory with a lifespan, and ``serve`` for ``labservice serve``.

Importing this module is cheap. :func:`create_app` builds the app; its lifespan finds the datasets
(folder scan and/or catalog), opens them, opens the token database and hands them to the routes through the
request state. Routers come from :data:`ROUTER_MODULES`, each exposing ``router``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from labservice import __version__
from labservice.http_errors import add_exception_handlers, document_errors
from labservice.limit_backends import backend_from_settings
from labservice.limits import Limits
from labservice.middleware import LimitsMiddleware, SecurityHeadersMiddleware, cors_options
from labservice.settings import Settings
from labservice.tokens import TokenStore

log = logging.getLogger("labservice")

API_PREFIX = "/api/v1"
# Every router the app serves, in one place; add a module here to publish its `router`.
ROUTER_MODULES: tuple[str, ...] = (
    "labservice.routers.health",
    "labservice.routers.catalog",
    "labservice.routers.points",
    "labservice.routers.cutout",
    "labservice.routers.jobs",
    "labservice.routers.cosmology",
    "labservice.routers.zarr_http",
    "labservice.routers.users",
    "labservice.routers.groups",
    "labservice.routers.links",
    "labservice.routers.mydb",
)

DESCRIPTION = """\
Measure inside large simulations instead of downloading them: values, derivatives and particle paths at
arbitrary points, box filters, thresholds and cutouts.

Bodies are JSON or msgpack (`Content-Type: application/msgpack`); responses follow `Accept`. In msgpack,
arrays are `{dtype, shape, data: raw bytes}`. Send `Authorization: Bearer <token>` for a registered
token's limits; without one you get the public limits (4096 points per request, small cutouts, no jobs).
Every response carries `X-Lab-Cost` (points x times, scanned nodes, or cutout bytes), `X-RateLimit-Limit`
and `X-RateLimit-Remaining` (requests left this minute). Big cutouts and point sets run as jobs (`/api/v1/jobs`).
"""


def public_limits(settings: Settings) -> Limits:
    """The limits of callers without a token."""
    return Limits(
        points_per_request=settings.public_points_per_request,
        max_cutout_bytes=settings.public_max_cutout_bytes,
        requests_per_minute=settings.public_requests_per_minute,
        max_concurrent=settings.public_max_concurrent,
        bytes_per_minute=settings.public_bytes_per_minute,
        jobs_allowed=False,
    )


def find_datasets(settings: Settings) -> dict[str, str]:
    """Dataset id -> URL from the data folder, the catalog and ``settings.datasets`` (later ones win)."""
    urls: dict[str, str] = {}
    if settings.data_dir is not None or settings.catalog is not None:
        from labservice.datasets import catalog

        if settings.data_dir is not None:
            urls.update(catalog.discover(settings.data_dir))
        if settings.catalog is not None:
            urls.update(catalog.load_catalog(settings.catalog))
    urls.update(settings.datasets)
    return urls


def _opener(cache_bytes: int) -> Any:
    """open_dataset with one chunk cache shared by every dataset of this app."""
    from labservice.facade import open_dataset
    from labservice.storage import ChunkCache

    cache = ChunkCache(cache_bytes)
    # Catalog URLs may carry the fsspec options (S3 endpoint, keys) needed to open them.
    from labservice.datasets.catalog import CatalogURL

    def opener(url: Any) -> Any:
        return open_dataset(
            url, storage_options=url.storage_options if isinstance(url, CatalogURL) else None, cache=cache
        )

    opener.cache = cache  # type: ignore[attr-defined] - /metrics exports its hits and misses
    return opener


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    settings: Settings = app.state.settings
    urls = await run_in_threadpool(find_datasets, settings)
    from labservice.datasets.simulation import SimulationRegistry
    from labservice.routers.deps import DatasetRegistry

    simulations = await run_in_threadpool(SimulationRegistry.from_settings, settings)
    urls = {**simulations.density_urls(), **urls}  # each simulation's density is also a field dataset
    opener = _opener(settings.cache_bytes)
    app.state.chunk_cache = opener.cache
    registry = await run_in_threadpool(DatasetRegistry.open, urls, opener)
    for ds_id, reason in registry.failed.items():
        log.warning("dataset %s not served: %s", ds_id, reason)
    from labservice.db import prepare

    # The embedded SQLite database is created or migrated here (old token/job files imported once).
    with_jobs = bool(settings.jobs_enabled) and getattr(app.state, "jobs", None) is None
    await run_in_threadpool(prepare, settings, with_jobs)
    tokens_url = settings.tokens_database_url()
    tokens = TokenStore(tokens_url) if tokens_url is not None else None
    from labservice.sharing import Access

    access = Access(tokens_url) if tokens_url is not None else None  # users, groups, shares, links
    platform_url = settings.database_url or tokens_url or (settings.jobs_database_url() if with_jobs else None)
    if platform_url is not None:  # /readyz pings it
        from labservice.db import database

        app.state.db = database(platform_url)
    app.state.registry = registry
    from labservice.datasets.mydb import MyDB

    # MyDB (tables in the user store, rows in the platform database); SQL over it sees these catalogs.
    app.state.mydb = MyDB.from_settings(settings, lambda: dict(simulations.items()))
    # A job engine set on app.state before start-up (tests, embedding) is used as it is.
    own_jobs = bool(settings.jobs_enabled) and getattr(app.state, "jobs", None) is None
    if own_jobs:
        from labservice.jobs import start_jobs

        await run_in_threadpool(start_jobs, app, settings)
    try:
        yield {
            "settings": settings,
            "registry": registry,
            "simulations": simulations,
            "tokens": tokens,
            "access": access,
            "public_limits": public_limits(settings),
        }
    finally:
        simulations.close()
        app.state.limits_backend.close()
        if own_jobs:
            from labservice.jobs import stop_jobs

            await run_in_threadpool(stop_jobs, app)


def _openapi_with_body_schemas(app: FastAPI) -> Any:
    """Generate OpenAPI once, moving the request-body schemas' definitions into components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                components.update(operation.pop("x-schema-defs", {}))
        document_errors(schema)  # our error body, and the statuses every operation can answer
        app.openapi_schema = schema
        return schema

    return openapi


def _add_observability(app: FastAPI, settings: Settings) -> None:
    """Metrics (``app.state.metrics``) and the access log: the outermost middleware, so every request counts."""
    app.state.metrics = None
    if settings.metrics:
        from labservice.metrics import Metrics

        app.state.metrics = Metrics(lambda: getattr(getattr(app.state, "jobs", None), "registry", None))
    if settings.metrics or settings.access_log:
        from labservice.access_log import AccessLogMiddleware

        app.add_middleware(
            AccessLogMiddleware, fastapi_app=app, metrics=app.state.metrics, log_lines=settings.access_log
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the labservice app.

    Parameters
    ----------
    settings
        The configuration; read from ``LABSERVICE_*`` environment variables when None.
    """
    settings = settings if settings is not None else Settings()
    app = FastAPI(
        title="labservice",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    add_exception_handlers(app)
    # In-process counts, or Redis shared by every worker and host (settings.redis_url); /readyz reads
    # app.state.limits_backend.degraded.
    app.state.limits_backend = backend_from_settings(settings)
    app.add_middleware(
        LimitsMiddleware,
        prefix=("/api/", "/tap/"),  # TAP sits at /tap, where IVOA clients expect it, under the same limits
        backend=app.state.limits_backend,
        trusted_proxies=settings.trusted_proxies,
    )
    if settings.cors_origins:  # off by default: only listed browser origins may call cross-site
        app.add_middleware(CORSMiddleware, **cors_options(settings.cors_origins))
    app.add_middleware(SecurityHeadersMiddleware)
    _add_observability(app, settings)
    for name in ROUTER_MODULES:
        app.include_router(importlib.import_module(name).router, prefix=API_PREFIX)
    from labservice.routers.health import root_router

    app.include_router(root_router)  # /livez, /readyz, /metrics: outside /api/, so outside the limits
    from labservice.routers import tap

    app.include_router(tap.router)  # the IVOA TAP service at /tap
    from labservice.routers import portal

    portal.install(app)  # the web portal's HTML pages at / and their files at /static

    app.openapi = _openapi_with_body_schemas(app)  # type: ignore[method-assign]
    return app

