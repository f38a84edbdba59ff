"""`labservice engine`: the job engine as its own process.

It runs against the platform database (``LABSERVICE_DATABASE_URL``), the scratch store
(``LABSERVICE_SCRATCH_URL``) and a Dask scheduler (``LABSERVICE_DASK_SCHEDULER``; unset, it starts a local
cluster). API servers run with ``LABSERVICE_ENGINE=external`` and only record and read jobs; any number of
engine processes claim the queued jobs through leases. SIGTERM or SIGINT stops it cleanly: its jobs'
leases are released, so another engine resumes them at once; after a SIGKILL they resume when the
leases expire (``LABSERVICE_ENGINE_LEASE_SECONDS``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from labservice.jobs.wiring import engine_from_settings, settings_resolver

log = logging.getLogger("labservice.jobs")
DB_RETRY_SECONDS = 30.0  # each database call of the engine rides out a restart this long


def run_engine(settings: Any, ready: Any = None) -> None:
    """Run an engine until SIGTERM or SIGINT; ``ready(engine)`` is called once it takes jobs."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("engine: signal %d, stopping (running jobs are handed back)", signum)
        stop.set()

    from labservice.db import prepare

    prepare(settings, with_jobs=True)  # SQLite: migrate (old files imported once); PostgreSQL: check it
    engine = engine_from_settings(settings, settings_resolver(settings))
    engine.registry.retry_seconds = DB_RETRY_SECONDS  # no HTTP caller waits on these calls
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        engine.start()
        where = settings.dask_scheduler or "a local Dask cluster"
        log.info("engine %s running jobs on %s", engine.engine_id, where)
        if ready is not None:
            ready(engine)
        while not stop.wait(1.0):
            pass
    finally:
        engine.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.info("engine %s stopped", engine.engine_id)


def main(settings: Any = None) -> None:
    """The command's body: log to stderr, print ``engine <id> ready`` on stdout once jobs are taken."""
    from labservice.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings if settings is not None else Settings()

    def ready(engine: Any) -> None:
        print(f"engine {engine.engine_id} ready", flush=True)

    run_engine(settings, ready)
    sys.stdout.flush()
