"""FastAPI dependencies shared by every router.

They read what the app's lifespan put in the request state. Tests (or another deployment) can replace any
of them with ``app.dependency_overrides``, as xpublish does with its dataset provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastapi import Request

from labservice.errors import StorageUnavailable, unknown
from labservice.limits import Caller, Limits
from labservice.middleware import caller_from_headers
from labservice.settings import Settings

if TYPE_CHECKING:
    from labservice.dataset import Dataset
    from labservice.datasets.simulation import SimulationRegistry


class DatasetRegistry:
    """The datasets a server publishes, by id, opened once at start-up.

    Parameters
    ----------
    datasets
        Open datasets keyed by id.
    failed
        Ids whose store could not be opened, with the reason (reported by health, answered with 503).
    """

    def __init__(
        self, datasets: dict[str, Dataset] | None = None, failed: dict[str, str] | None = None
    ) -> None:
        self._datasets = dict(datasets or {})
        self.failed = dict(failed or {})

    @classmethod
    def open(cls, urls: dict[str, str], opener: Callable[[str], Any]) -> DatasetRegistry:
        """Open every URL with ``opener``; a store that fails is recorded, not fatal."""
        opened: dict[str, Any] = {}
        failed: dict[str, str] = {}
        for ds_id, url in sorted(urls.items()):
            try:
                opened[ds_id] = opener(url)
            except Exception as exc:  # one broken store must not take the service down
                failed[ds_id] = f"{type(exc).__name__}: {exc}"
        return cls(opened, failed)

    def ids(self) -> list[str]:
        return sorted(self._datasets)

    def items(self) -> Iterable[tuple[str, Dataset]]:
        return sorted(self._datasets.items())

    def get(self, dataset_id: str) -> Dataset:
        """The dataset with this id; NotFound with close matches otherwise."""
        ds = self._datasets.get(dataset_id)
        if ds is not None:
            return ds
        if dataset_id in self.failed:
            raise StorageUnavailable(f"dataset {dataset_id!r} could not be opened: {self.failed[dataset_id]}")
        raise unknown("dataset", dataset_id, self._datasets)


def get_settings(request: Request) -> Settings:
    """The service settings."""
    return request.state.settings


def get_datasets(request: Request) -> DatasetRegistry:
    """The registry of published datasets."""
    return request.state.registry


def get_simulations(request: Request) -> SimulationRegistry:
    """The registry of published cosmology simulations (empty when the app found none)."""
    sims = getattr(request.state, "simulations", None)
    if sims is None:
        from labservice.datasets.simulation import SimulationRegistry

        sims = SimulationRegistry()
    return sims


def get_caller(request: Request) -> Caller:
    """Who is asking, with their limits (set by the limits middleware)."""
    caller = getattr(request.state, "caller", None)
    if caller is not None:
        return caller
    # Routes mounted outside /api/ (or apps without the middleware) resolve the caller here.
    public = getattr(request.state, "public_limits", Limits())
    tokens = getattr(request.state, "tokens", None)
    host = request.client.host if request.client else ""
    return caller_from_headers({k.lower(): v for k, v in request.headers.items()}, host, tokens, public)
