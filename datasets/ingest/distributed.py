"""Ingest on a Dask cluster: one task per shard, each written and marked done by the worker that runs it.

The client sends each worker a :class:`~labservice.datasets.ingest.loop.TaskContext` of JSON-able values
(the descriptor, the metadata, the store URL); a worker opens the store and the sources once per ingest
and keeps them for the ingest's other tasks. A task is idempotent (it writes a whole shard, then its
mark), so Dask may run it again after a worker dies, and a new run after a killed client skips the shards
already marked done.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

from labservice.datasets.ingest.loop import ShardTask, TaskContext, default_threads, write_shard
from labservice.errors import InvalidInput, StorageUnavailable

_OPEN: dict[str, tuple[Any, dict]] = {}  # per worker process: the context's JSON -> (store, sources)
_OPEN_LOCK = threading.Lock()
_KEEP = 4  # contexts kept open per worker (one per recent ingest)


def _opened(ctx: TaskContext) -> tuple[Any, dict]:
    key = json.dumps(ctx.__dict__, sort_keys=True)
    with _OPEN_LOCK:
        hit = _OPEN.get(key)
        if hit is None:
            while len(_OPEN) >= _KEEP:
                store, _ = _OPEN.pop(next(iter(_OPEN)))
                store.close()
            hit = _OPEN[key] = ctx.open()
        return hit


def run_task(ctx: TaskContext, t: int, variable: str, shard: tuple[int, int, int]) -> int:
    """The Dask task: write one shard and mark it done; the bytes written."""
    store, sources = _opened(ctx)
    return write_shard(store, sources[variable], ShardTask(t, variable, tuple(shard)))  # type: ignore[arg-type]


def _client(address: str, workers: int | None) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if address == "local":
        cluster = LocalCluster(
            n_workers=workers or default_threads(), threads_per_worker=1, processes=True, dashboard_address=None
        )
        return Client(cluster, set_as_default=False), cluster
    try:
        return Client(address, timeout=10, set_as_default=False), None
    except (OSError, TimeoutError) as exc:
        raise StorageUnavailable(
            f"cannot reach the Dask scheduler at {address!r} ({exc}); start one with 'dask scheduler', or pass "
            "--dask local"
        ) from None
    except ValueError as exc:
        raise InvalidInput(f"--dask must be a scheduler address such as tcp://host:8786, or 'local'; {exc}") from None


def run_on_dask(
    address: str,
    ctx: TaskContext,
    tasks: list[ShardTask],
    done: Callable[[ShardTask, int], None],
    workers: int | None = None,
) -> None:
    """Run the tasks on the cluster at ``address`` (or a local one of ``workers`` processes); ``done`` is
    called in this thread as each finishes. On the first failure the tasks not started are cancelled, and
    the error is raised."""
    from distributed import as_completed

    if not tasks:
        return
    client, cluster = _client(address, workers)
    try:
        [shared] = client.scatter([ctx], broadcast=True, hash=False)
        run = uuid.uuid4().hex[:8]  # task keys unique per run, so a rerun never meets an old run's keys
        futures = {
            client.submit(run_task, shared, task.t, task.variable, task.shard, pure=False,
                          key=f"ingest-{task.variable}-{task.t}-{'.'.join(map(str, task.shard))}-{run}"): task
            for task in tasks
        }  # fmt: skip
        try:
            for future in as_completed(list(futures), loop=client.loop):
                done(futures[future], future.result())
        except BaseException:
            client.cancel(list(futures))
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
