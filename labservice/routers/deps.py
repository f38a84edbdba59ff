"""FastAPI dependencies shared by every router: the settings, the caller, the dataset, the simulation
and the job engine, each resolved once per request.

Routes take them as annotated parameters (``ds: DatasetDep``, ``caller: CallerDep``), as xpublish's routes
take ``get_dataset``. They read what the app's lifespan put in the request state; tests (or another
deployment) can replace any of them with ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from labservice.datasets.simulation import Simulation, SimulationRegistry
from labservice.encoding import parse_request
from labservice.errors import NotFound, StorageUnavailable, Unauthorized, unknown
from labservice.facade import Dataset
from labservice.limits import Caller, Limits, check_cutout_bytes, check_points
from labservice.middleware import caller_from_headers
from labservice.settings import Settings
from labservice.sharing import Access
from labservice.tokens import TokenStore

if TYPE_CHECKING:
    from labservice.jobs import JobEngine
else:  # the engine module pulls in Dask: the annotation alone must not import it
    JobEngine = Any

M = TypeVar("M", bound=BaseModel)


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


def api_root(request: Request) -> str:
    """The path the service is mounted under (``labservice serve --root-path``), "" at the top: every
    link and Location the API writes starts with it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def table_saved(request: Request, info: dict[str, Any]) -> JSONResponse:
    """201 with a table just saved in the caller's MyDB, and where it lives."""
    return JSONResponse(info, status_code=201, headers={"Location": f"{api_root(request)}/api/v1/mydb/tables/{info['name']}"})


# The dependencies that only read the request state are coroutines: FastAPI runs a plain ``def``
# dependency in a worker thread, a thread hop (~0.1 ms) per dependency per request.
async def get_settings(request: Request) -> Settings:
    """The service settings."""
    return request.state.settings


async def get_datasets(request: Request) -> DatasetRegistry:
    """The registry of published datasets."""
    return request.state.registry


def get_simulations(request: Request) -> SimulationRegistry:
    """The registry of published cosmology simulations (empty when the app found none)."""
    sims = getattr(request.state, "simulations", None)
    return SimulationRegistry() if sims is None else sims


async def get_caller(request: Request) -> Caller:
    """Who is asking, with their limits (set by the limits middleware)."""
    caller = getattr(request.state, "caller", None)
    if caller is not None:
        return caller
    return await run_in_threadpool(_caller_of, request)  # a token may need a database lookup


def _caller_of(request: Request) -> Caller:
    # Routes mounted outside /api/ (or apps without the middleware) resolve the caller here.
    public = getattr(request.state, "public_limits", Limits())
    tokens = getattr(request.state, "tokens", None)
    host = request.client.host if request.client else ""
    return caller_from_headers({k.lower(): v for k, v in request.headers.items()}, host, tokens, public)


def get_access(request: Request) -> Access:
    """Groups, shares and links (:class:`labservice.sharing.Access`); 503 when the server has no token database."""
    access = getattr(request.state, "access", None)
    if access is None:
        raise StorageUnavailable("this server has no token database, so no users, groups or sharing")
    return access


def get_tokens(request: Request) -> TokenStore:
    tokens = getattr(request.state, "tokens", None)
    if tokens is None:
        raise StorageUnavailable("this server has no token database, so no users or tokens")
    return tokens


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[DatasetRegistry, Depends(get_datasets)]
SimulationsDep = Annotated[SimulationRegistry, Depends(get_simulations)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AccessDep = Annotated[Access, Depends(get_access)]
TokensDep = Annotated[TokenStore, Depends(get_tokens)]


def get_user(caller: CallerDep) -> Caller:
    """The caller as a user (a token holder, with ``user_id``, ``user``, ``scopes``); 401 for public callers."""
    if caller.token_id is None or caller.user_id is None:
        raise Unauthorized(
            "this needs a token: send 'Authorization: Bearer lab_...' with a token from "
            "`labservice token create --user NAME` (ask the operator for one)"
        )
    return caller


UserDep = Annotated[Caller, Depends(get_user)]


@dataclass
class RequestLimits:
    """The size limits of this request: checks a size against the caller's limits (LimitExceeded, 413) and
    records what the request costs (the ``X-Lab-Cost`` header)."""

    caller: Caller
    settings: Settings
    request: Request

    @property
    def cutout_cap(self) -> int:
        """Bytes one synchronous cutout may have: the smaller of the token's and the server's cap."""
        return min(self.caller.limits.max_cutout_bytes, self.settings.sync_cutout_bytes)

    def points(self, npoints: int, ntimes: int = 1) -> None:
        """Points x times within the caller's points_per_request."""
        self.request.state.cost = self.request.state.points = check_points(self.caller.limits, npoints, ntimes)

    def cutout(self, nbytes: int, hint: str, cost: int | None = None) -> None:
        """A synchronous read of ``nbytes`` within :attr:`cutout_cap`; ``hint`` says what to do instead."""
        check_cutout_bytes(self.caller.limits, nbytes, self.settings.sync_cutout_bytes, hint)
        self.charge(nbytes if cost is None else cost)

    def charge(self, cost: int) -> None:
        self.request.state.cost = cost


async def get_limits(request: Request, caller: CallerDep, settings: SettingsDep) -> RequestLimits:
    """This request's limits (the caller's, capped by the server's settings)."""
    return RequestLimits(caller, settings, request)


LimitsDep = Annotated[RequestLimits, Depends(get_limits)]


async def get_dataset(dataset_id: str, registry: RegistryDep) -> Dataset:
    """The field dataset named by the ``{dataset_id}`` path parameter; 404 with close matches, 503 when
    its store could not be opened."""
    return registry.get(dataset_id)


def get_simulation(sim: str, sims: SimulationsDep, registry: RegistryDep) -> Simulation:
    """The cosmology simulation named by the ``{sim}`` path parameter; a field dataset of that id gets a
    404 that says what the cosmology routes need."""
    if sim not in sims and sim in registry.ids():
        raise NotFound(
            f"dataset {sim!r} is a field dataset, not a cosmology simulation; these routes need one of: "
            + (", ".join(sims.ids()) or "(none served)")
        )
    return sims.get(sim)


def get_engine(request: Request) -> JobEngine:
    """The job engine of this app; 503 when the server runs without jobs."""
    engine = getattr(request.app.state, "jobs", None)
    if engine is None:
        raise StorageUnavailable("batch jobs are not enabled on this server (no job engine is running)")
    return engine


DatasetDep = Annotated[Dataset, Depends(get_dataset)]
SimulationDep = Annotated[Simulation, Depends(get_simulation)]
EngineDep = Annotated[JobEngine, Depends(get_engine)]


def body_of(model: type[M]) -> Any:
    """A dependency giving the request body (JSON or msgpack) parsed as ``model``, within the size limit."""

    async def parse(request: Request, settings: SettingsDep) -> M:
        return await parse_request(request, model, settings.max_body_bytes)

    return Depends(parse)
