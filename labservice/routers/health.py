"""Health: ``/api/v1/health`` (datasets and job engine), and at the root, outside ``/api/`` and its limits,
``/livez`` (the process answers), ``/readyz`` (it can reach what it needs) and ``/metrics`` (Prometheus).

``/readyz`` is 503 when the platform database, Redis (when configured) or a dataset's storage cannot be
reached, each check bounded by :data:`CHECK_TIMEOUT`; its body names every check. When the limits fell back
to per-process counting (Redis down), it says ``"limits": "per-process"`` and status ``degraded``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from labservice import __version__
from labservice.errors import NotFound
from labservice.routers.deps import RegistryDep

router = APIRouter(tags=["health"])
# Mounted at the root by the app, not under /api/v1: probes and scrapers pass no limits and no token.
root_router = APIRouter(tags=["health"], include_in_schema=False)

CHECK_TIMEOUT = 2.0  # seconds one readiness check may take before it counts as unreachable
_NO_STORE = {"Cache-Control": "no-store"}

_EXAMPLE = {
    "status": "ok",
    "version": __version__,
    "datasets": {"served": ["channel64", "isotropic64"], "failed": {}},
    "jobs": {"enabled": True, "reachable": True, "scheduler": "tcp://127.0.0.1:8786"},
}


def _jobs_state(request: Request) -> dict[str, Any]:
    engine = getattr(request.app.state, "jobs", None)
    client = getattr(engine, "client", None)
    if client is None:
        return {"enabled": False, "reachable": False, "scheduler": None}
    return {
        "enabled": True,
        "reachable": getattr(client, "status", "") == "running",
        "scheduler": getattr(client, "scheduler", None) and client.scheduler.address,
    }


@router.get(
    "/health",
    operation_id="health",
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}},
)
def health(request: Request, registry: RegistryDep) -> dict[str, Any]:
    """Liveness, the datasets served (and any that failed to open) and whether the job engine is reachable."""
    jobs = _jobs_state(request)
    healthy = not registry.failed and (jobs["reachable"] or not jobs["enabled"])
    return {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "datasets": {"served": registry.ids(), "failed": registry.failed},
        "jobs": jobs,
    }


@root_router.get("/livez")
def livez() -> JSONResponse:
    """The process is up and its event loop answers (nothing else is checked)."""
    return JSONResponse({"status": "alive", "version": __version__, "pid": os.getpid()}, headers=_NO_STORE)


# -- readiness -------------------------------------------------------------------------------------
def _sqlite_path(target: Any) -> Path | None:
    """The file of a SQLite target (a path, a sqlite:/// URL, or a platform Database), else None."""
    if hasattr(target, "engine") or hasattr(target, "url"):  # labservice.db's Database
        path = getattr(target, "path", None)
        return Path(path) if path else None
    if isinstance(target, Path):
        return target
    text = str(target)
    if text.startswith("sqlite"):
        return Path(text.split(":///", 1)[1].split("?", 1)[0]) if ":///" in text else None
    return None if "://" in text else Path(text)


def ping_database(target: Any) -> None:
    """``SELECT 1`` against the platform database: a SQLite file (which must still be there; no new empty
    file is made), or the database's own pool (PostgreSQL)."""
    path = _sqlite_path(target)
    if path is not None:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=CHECK_TIMEOUT)
        try:
            db.execute("SELECT 1").fetchone()
        finally:
            db.close()
        return
    from sqlalchemy import text

    engine = getattr(target, "engine", None)
    if engine is None:
        from labservice.db.connect import database

        engine = database(str(target)).engine
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _database_targets(request: Request) -> dict[str, Any]:
    """The token and job databases this process uses, by name: one check per distinct database."""
    holders = {
        "tokens": getattr(request.state, "tokens", None),
        "jobs": getattr(getattr(request.app.state, "jobs", None), "registry", None),
    }
    targets: dict[str, Any] = {}
    seen: set[str] = set()
    for name, holder in holders.items():
        target = getattr(holder, "db", None) or getattr(holder, "url", None) or getattr(holder, "path", None)
        key = str(getattr(target, "url", target))
        if target is not None and key not in seen:
            seen.add(key)
            targets[name] = target
    return targets


def ping_redis(request: Request) -> bool | None:
    """Whether Redis answers; None when no Redis is configured."""
    backend = getattr(request.app.state, "limits_backend", None)
    settings = request.app.state.settings
    url = getattr(settings, "redis_url", None)
    if backend is not None and hasattr(backend, "ping"):
        backend.ping()
        return True
    if not url:
        return None
    import redis

    client = redis.Redis.from_url(str(url), socket_connect_timeout=CHECK_TIMEOUT / 2, socket_timeout=CHECK_TIMEOUT / 2)
    try:
        client.ping()
    finally:
        client.close()
    return True


def probe_store(url: str, storage_options: dict[str, Any] | None) -> None:
    """Raise when the dataset's root cannot be reached (a local path that vanished, an S3 endpoint down)."""
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is gone")
        return
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url, **(storage_options or {}))
    if not fs.exists(path):
        raise FileNotFoundError(f"{url} is gone")


def _run_checks(request: Request) -> dict[str, dict[str, Any]]:
    checks: dict[str, Any] = {}
    for name, target in _database_targets(request).items():
        checks[f"database:{name}"] = (ping_database, target)
    checks["redis"] = (ping_redis, request)
    registry = getattr(request.state, "registry", None)
    for ds_id, ds in registry.items() if registry is not None else ():
        store = ds.store
        checks[f"storage:{ds_id}"] = (probe_store, str(store.url), getattr(store, "storage_options", None))
    results: dict[str, dict[str, Any]] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(checks))), thread_name_prefix="readyz")
    try:
        futures = {name: (time.perf_counter(), pool.submit(fn, *args)) for name, (fn, *args) in checks.items()}
        deadline = time.monotonic() + CHECK_TIMEOUT
        for name, (t0, fut) in futures.items():
            try:
                answer = fut.result(timeout=max(0.0, deadline - time.monotonic()))
                if answer is None and name == "redis":
                    results[name] = {"ok": True, "configured": False}
                    continue
                results[name] = {"ok": True, "ms": round((time.perf_counter() - t0) * 1000, 1)}
            except FutureTimeout:
                results[name] = {"ok": False, "error": f"no answer within {CHECK_TIMEOUT} s"}
            except Exception as exc:  # any failure to reach it is "not ready", with the reason
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung check must not hold the answer
    return results


def limits_degraded(app: Any) -> bool:
    """True when the limits backend says it fell back to per-process counting."""
    return bool(getattr(getattr(app.state, "limits_backend", None), "degraded", False))


@root_router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 when the database, Redis (if configured) and every dataset's storage answer; else 503."""
    checks = await run_in_threadpool(_run_checks, request)
    ready = all(c["ok"] for c in checks.values())
    degraded = limits_degraded(request.app)
    registry = getattr(request.state, "registry", None)
    failed = dict(getattr(registry, "failed", {}) or {})
    down = [name for name, c in checks.items() if not c["ok"]]
    # Redis alone down: the service still answers, on per-process limits, so it says "degraded" (still 503,
    # so a balancer that can choose prefers a fully ready host).
    only_redis = down == ["redis"]
    status = "ok" if ready and not (degraded or failed) else "degraded" if ready or only_redis else "unavailable"
    body = {
        "status": status,
        "version": __version__,
        "limits": "per-process" if degraded or checks.get("redis", {}).get("configured") is False else "shared",
        "checks": checks,
        "datasets_failed": failed,
    }
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.set_degraded(degraded)
    headers = dict(_NO_STORE)
    if not ready:
        headers["Retry-After"] = "5"
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


@root_router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format, summed over every worker process of this server."""
    m = getattr(request.app.state, "metrics", None)
    if m is None:
        raise NotFound("metrics are off on this server (LABSERVICE_METRICS=off)")
    m.set_degraded(limits_degraded(request.app))
    from labservice.metrics import CONTENT_TYPE

    text = await run_in_threadpool(m.exposition)
    return Response(text, media_type=CONTENT_TYPE, headers=_NO_STORE)
