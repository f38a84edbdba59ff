"""Reusable working memory for the point engine's per-batch placement arrays.

A batch of 10^6 points needs about 81 MB of them (sort keys, statuses, placement records in the
caller's and in evaluation order, the order itself). Fresh memory costs a page fault per page: about
0.25 ms per MB here, 20 ms a batch, an eighth of a whole lag4 call. So finished batches hand their
arrays back to a small pool and later batches take them again. The pool keeps at most :data:`KEEP`
sets, the largest ones: between requests a process holds at most ``KEEP * 81`` bytes per point of its
biggest batches (about 170 MB with the default batch of 2^20 points).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from labservice.interpolation.kernels import RECORD

KEEP = 2  # idle sets kept for reuse


class Workspace:
    """Placement arrays with room for ``capacity`` points (slice them to a batch's size)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = np.empty(capacity, dtype=np.int64)
        self.status = np.empty(capacity, dtype=np.int8)
        self.records = np.empty((capacity, RECORD))
        self.ordered = np.empty((capacity, RECORD))
        self.order = np.empty(capacity, dtype=np.int64)


_lock = threading.Lock()
_idle: list[Workspace] = []


def take(n: int) -> Workspace:
    """The smallest idle workspace with room for ``n`` points, or a new one."""
    with _lock:
        fits = [w for w in _idle if w.capacity >= n]
        if fits:
            w = min(fits, key=lambda w: w.capacity)
            _idle.remove(w)
            return w
    return Workspace(n)


def give(w: Workspace) -> None:
    """Return a workspace nobody uses any more; only the :data:`KEEP` largest idle ones are kept."""
    with _lock:
        _idle.append(w)
        _idle.sort(key=lambda w: w.capacity, reverse=True)
        del _idle[KEEP:]


def clear() -> None:
    """Drop every idle workspace (their memory goes back to the allocator)."""
    with _lock:
        _idle.clear()


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a fork may have copied it held by another thread
    _idle.clear()


os.register_at_fork(after_in_child=_after_fork)
