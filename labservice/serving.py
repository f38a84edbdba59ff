"""``labservice serve``: uvicorn with one process, or N worker processes under uvicorn's supervisor.

With ``workers`` > 1 each worker builds its own app from the environment (:func:`app_from_environment`, a
uvicorn factory): the command's options are handed down as ``LABSERVICE_*`` variables, so every worker
serves the same settings. uvicorn's supervisor pings its workers and starts a new one in place of any that
dies. Limits are only correct in total across workers when they are counted in Redis, so N > 1 without
``LABSERVICE_REDIS_URL`` is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from labservice.errors import InvalidInput
from labservice.settings import Settings

# Keep idle connections longer than clients' pools do (httpx: 5 s), so that a client never sends on a
# connection the server is closing at that moment (a ReadError seen under load).
KEEP_ALIVE_SECONDS = 30


def serve_settings(**overrides: Any) -> Settings:
    """The settings of a served app: the environment, ``overrides`` (None values ignored), and jobs on
    unless ``LABSERVICE_JOBS_ENABLED`` says otherwise (the served product runs jobs)."""
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if settings.jobs_enabled is None:
        settings = settings.model_copy(update={"jobs_enabled": True})
    return settings


def app_from_environment() -> Any:
    """The uvicorn factory each worker process calls (``labservice.serving:app_from_environment``)."""
    from labservice.app import create_app

    return create_app(serve_settings())


def check_workers(settings: Settings) -> None:
    """Refuse N > 1 workers without Redis: each would count limits on its own (N times looser)."""
    if settings.workers > 1 and not settings.redis_url:
        raise InvalidInput(
            f"--workers {settings.workers} needs shared limits: set LABSERVICE_REDIS_URL "
            "(e.g. redis://127.0.0.1:6379/0), or run one worker; without Redis every worker would count "
            "rate limits, requests in flight and byte budgets on its own"
        )


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: Path | None = None,
    catalog: Path | None = None,
    workers: int | None = None,
    root_path: str | None = None,
) -> None:
    """Serve until stopped; arguments given override the ``LABSERVICE_*`` environment."""
    overrides = {
        "data_dir": Path(data_dir) if data_dir is not None else None,
        "catalog": Path(catalog) if catalog is not None else None,
        "workers": workers,
        "root_path": root_path.rstrip("/") if root_path else root_path,
    }
    settings = serve_settings(**overrides)
    check_workers(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _run_uvicorn(settings, overrides, host, port)


def _run_uvicorn(settings: Settings, overrides: dict[str, Any], host: str, port: int) -> None:
    import uvicorn

    # X-Forwarded-For is read by the limits middleware, from settings.trusted_proxies only: uvicorn's own
    # proxy-header handling (which trusts 127.0.0.1 by default) is off.
    # loop and http stay "auto": uvloop and httptools (uvicorn[standard]). Measured against uvicorn's
    # h11 + asyncio and against granian on the bulk paths (25 MB cutouts, 10^6 points), they were the
    # fastest: uvloop writes a memoryview body without copying it.
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": False,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "proxy_headers": False,
        "root_path": settings.root_path,
    }
    if settings.access_log:  # JSON access lines on stderr, set up by uvicorn in every worker process
        from labservice.access_log import uvicorn_log_config

        options["log_config"] = uvicorn_log_config()
    # /metrics adds up the counters of every worker from files in one folder, set before any worker starts.
    cleanup = lambda: None  # noqa: E731
    if settings.metrics:
        from labservice.metrics import prepare_multiprocess_dir

        cleanup = prepare_multiprocess_dir(settings.metrics_dir)
    try:
        if settings.workers == 1:
            from labservice.app import create_app

            uvicorn.run(create_app(settings), **options)
            return
        # Workers are separate (spawned) processes: they read the options from the environment.
        for name, value in overrides.items():
            if value is not None:
                os.environ[f"LABSERVICE_{name.upper()}"] = str(value)
        os.environ["LABSERVICE_JOBS_ENABLED"] = "true" if settings.jobs_enabled else "false"
        uvicorn.run(
            "labservice.serving:app_from_environment", factory=True, workers=settings.workers, **options
        )
    finally:
        cleanup()
