"""Split a large point set into requests within the caller's limit, send them concurrently, reassemble.

Batches are contiguous slices of the input, sent through a bounded thread pool (httpx's client is
thread-safe); results are put back in input order whatever order they finish in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

R = TypeVar("R")


def batch_slices(n: int, per_batch: int) -> list[slice]:
    """Contiguous slices covering ``range(n)``, each at most ``per_batch`` long."""
    per_batch = max(1, int(per_batch))
    return [slice(i, min(i + per_batch, n)) for i in range(0, n, per_batch)]


def tqdm_class() -> Any:
    """tqdm's bar class: the notebook widget when ipywidgets is installed, else the text bar; None without tqdm.

    ``tqdm.auto`` alone warns "IProgress not found" in a Jupyter kernel without ipywidgets.
    """
    try:
        import tqdm.std
    except ImportError:  # tqdm is optional: no bar without it
        return None
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return tqdm.std.tqdm
    from tqdm.auto import tqdm as auto

    return auto


def _progress_bar(total: int, unit: str, desc: str) -> Any:
    bar = tqdm_class()
    return None if bar is None else bar(total=total, unit=unit, unit_scale=True, desc=desc)


def run_batches(
    send: Callable[[slice], R],
    slices: Sequence[slice],
    concurrency: int,
    progress: bool,
    desc: str = "points",
) -> list[R]:
    """Call ``send`` on every slice with at most ``concurrency`` in flight; results in slice order.

    The first failure is raised once the batches already in flight have finished.
    """
    bar = _progress_bar(sum(s.stop - s.start for s in slices), desc, desc) if progress else None
    try:
        if len(slices) == 1 or concurrency <= 1:
            out = []
            for s in slices:
                out.append(send(s))
                if bar is not None:
                    bar.update(s.stop - s.start)
            return out
        with ThreadPoolExecutor(max_workers=min(concurrency, len(slices))) as pool:
            futures = [pool.submit(send, s) for s in slices]
            results: list[R] = []
            for s, fut in zip(slices, futures, strict=True):
                try:
                    results.append(fut.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
                if bar is not None:
                    bar.update(s.stop - s.start)
            return results
    finally:
        if bar is not None:
            bar.close()
