"""Prometheus metrics of the service, correct across worker processes.

One :class:`Metrics` per app (``app.state.metrics``), so that several apps in one process (the tests) each
count only their own requests. With ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client keeps every
process's values in memory-mapped files in that folder and :meth:`Metrics.exposition` sums them, so any
worker's ``/metrics`` reports the whole server. ``labservice serve`` sets the folder up per run
(:func:`prepare_multiprocess_dir`) before any worker starts.

Exported (see also the README's "Scaling out"):

========================================  =========  ======================  ==============================
name                                      type       labels                  what
========================================  =========  ======================  ==============================
labservice_requests_total                 counter    route, method, status   requests answered; route is the
                                                                             route template, "unmatched" else
labservice_request_duration_seconds       histogram  route                   request start to last body byte
labservice_points_served_total            counter    (none)                  points x times answered (2xx)
labservice_bytes_served_total             counter    route                   response body bytes sent
labservice_chunk_cache_hits_total         counter    (none)                  inner chunks found in the cache
labservice_chunk_cache_misses_total       counter    (none)                  inner chunks read from the store
labservice_limit_refusals_total           counter    kind                    rate, concurrency, bytes, size
labservice_jobs                           gauge      state                   jobs in the registry by state
labservice_limits_degraded                gauge      (none)                  1 when limits are per-process
========================================  =========  ======================  ==============================
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("labservice")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REFUSAL_KINDS = ("rate", "concurrency", "bytes", "size")


def prepare_multiprocess_dir(metrics_dir: Path | None = None) -> Callable[[], None]:
    """Point prometheus_client at a per-run folder shared by this server's worker processes.

    Call it in the parent process before any worker starts (workers inherit the environment).

    - ``PROMETHEUS_MULTIPROC_DIR`` already set (a supervisor owns the folder): used as it is.
    - ``metrics_dir`` given (``LABSERVICE_METRICS_DIR``): created, emptied of the last run's files, used.
    - neither: a fresh temporary folder, removed again by the returned cleanup.

    Returns the cleanup to call when the server stops.
    """
    if os.environ.get(MULTIPROC_ENV):
        return lambda: None
    if metrics_dir is not None:
        folder = Path(metrics_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db"):  # last run's counters would otherwise be added to this run's
            old.unlink()
        cleanup: Callable[[], None] = lambda: None  # noqa: E731 - the operator's folder stays
    else:
        _remove_orphans()
        folder = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-"))
        cleanup = lambda: shutil.rmtree(folder, ignore_errors=True)  # noqa: E731
    os.environ[MULTIPROC_ENV] = str(folder)
    _use_multiprocess_values()
    return cleanup


_TEMP_PREFIX = "labservice-metrics-"


def _remove_orphans() -> None:
    # A server killed with SIGKILL cannot remove its folder: the next start removes those whose server
    # (the pid in the name) is gone.
    import psutil

    for folder in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*-*"):
        pid = folder.name[len(_TEMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _use_multiprocess_values() -> None:
    # prometheus_client picks its value class when first imported; if something imported it before the
    # folder was set, switch it now (its metrics module reads values.ValueClass at each metric's creation).
    import sys

    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def refusal_kind(status: int, body: bytes) -> str | None:
    """Which limit refused a request, from the error answer (429 or 413), or None when it was no limit.

    The ``limit`` field of the body says it when the raiser named it; otherwise the code and the message.
    """
    if status not in (413, 429):
        return None
    try:
        err = json.loads(body)
    except ValueError:
        return "size" if status == 413 else None
    if not isinstance(err, dict):
        return None
    kind = err.get("limit")
    if kind in REFUSAL_KINDS:
        return str(kind)
    if status == 413:
        return "size"
    if err.get("code") != "rate_limited":
        return None  # a job quota (quota_exceeded) is not a request limit
    detail = str(err.get("detail", "")).lower()
    if "concurrent" in detail:
        return "concurrency"
    if "byte" in detail:
        return "bytes"
    return "rate"


class Metrics:
    """The metrics of one app. ``jobs_source`` returns the job registry (or None) at scrape time."""

    def __init__(self, jobs_source: Callable[[], Any] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: scrapers need only the totals
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self.requests = Counter(
            "labservice_requests", "Requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=reg,
        )
        self.latency = Histogram(
            "labservice_request_duration_seconds", "Time from request start to the last body byte.",
            ["route"], buckets=LATENCY_BUCKETS, registry=reg,
        )
        self.points = Counter("labservice_points_served", "Points x times answered (2xx).", registry=reg)
        self.bytes = Counter("labservice_bytes_served", "Response body bytes sent.", ["route"], registry=reg)
        self.cache_hits = Counter("labservice_chunk_cache_hits", "Inner chunks found in the cache.", registry=reg)
        self.cache_misses = Counter(
            "labservice_chunk_cache_misses", "Inner chunks read from the store.", registry=reg
        )
        self.refusals = Counter(
            "labservice_limit_refusals", "Requests refused by a limit, by kind.", ["kind"], registry=reg
        )
        for kind in REFUSAL_KINDS:  # present at 0, so a rate() over them works from the start
            self.refusals.labels(kind)
        self.degraded = Gauge(
            "labservice_limits_degraded", "1 when limits fell back to per-process counting (Redis down).",
            registry=reg, multiprocess_mode="livemax",
        )
        self._jobs_source = jobs_source
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._cache_seen: dict[int, tuple[int, int]] = {}  # id(cache) -> (hits, misses) already counted

    def observe(self, route: str, method: str, status: int, seconds: float, nbytes: int, points: int) -> None:
        """Count one finished request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds tuples: once per route, method and status
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)), self.latency.labels(route), self.bytes.labels(route)
            )
        children[0].inc()
        children[1].observe(seconds)
        if nbytes:
            children[2].inc(nbytes)
        if points and 200 <= status < 300:
            self.points.inc(points)

    def refused(self, kind: str) -> None:
        self.refusals.labels(kind).inc()

    def sync_cache(self, cache: Any) -> None:
        """Add the chunk cache's hits and misses since the last call (the cache counts; we export)."""
        if cache is None:
            return
        hits, misses = int(getattr(cache, "hits", 0)), int(getattr(cache, "misses", 0))
        seen_h, seen_m = self._cache_seen.get(id(cache), (0, 0))
        if hits > seen_h:
            self.cache_hits.inc(hits - seen_h)
        if misses > seen_m:
            self.cache_misses.inc(misses - seen_m)
        self._cache_seen[id(cache)] = (max(hits, seen_h), max(misses, seen_m))

    def set_degraded(self, degraded: bool) -> None:
        self.degraded.set(1 if degraded else 0)

    def exposition(self) -> bytes:
        """The Prometheus text of every process of this server, plus the jobs by state."""
        from prometheus_client import CollectorRegistry, generate_latest

        if multiprocess():
            from prometheus_client import multiprocess as mp

            _forget_dead_workers(mp)
            registry = CollectorRegistry(auto_describe=False)
            mp.MultiProcessCollector(registry)
        else:
            registry = self.registry
        text = generate_latest(registry)
        return text + generate_latest(_JobsRegistry(self._jobs_source))


def _forget_dead_workers(mp: Any) -> None:
    # A worker that died (and was replaced) keeps its counters (they happened), but its live gauges go.
    import psutil

    for f in Path(os.environ[MULTIPROC_ENV]).glob("gauge_live*_*.db"):
        pid = f.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            mp.mark_process_dead(int(pid))


class _JobsRegistry:
    """A one-collector registry for generate_latest: jobs by state, read from the shared job registry at
    scrape time (so every process reports the same, global numbers)."""

    def __init__(self, source: Callable[[], Any] | None) -> None:
        self.source = source

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("labservice_jobs", "Jobs in the registry, by state.", labels=["state"])
        for state, n in sorted(job_counts(self.source() if self.source else None).items()):
            family.add_metric([state], n)
        yield family


def job_counts(registry: Any) -> dict[str, int]:
    """Jobs by state from a job registry (every known state, 0 when none); {} without a registry."""
    if registry is None:
        return {}
    try:
        from labservice.jobs.registry import STATUSES
    except ImportError:  # pragma: no cover - the jobs package is part of labservice
        STATUSES = ()
    counts = dict.fromkeys(STATUSES, 0)
    try:
        if hasattr(registry, "count_by_status"):
            counts.update({str(k): int(v) for k, v in registry.count_by_status().items()})
        else:
            for rec in registry.list():
                counts[rec.status] = counts.get(rec.status, 0) + 1
    except Exception as exc:  # a scrape must not fail because the database is away; /readyz says so
        log.warning("jobs by state not available: %s", exc)
        return {}
    return counts
