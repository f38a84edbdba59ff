"""``AsyncLab``: the client on httpx's AsyncClient, for async notebooks and services.

>>> async with AsyncLab("http://127.0.0.1:8000") as lab:
...     iso = await lab.dataset("isotropic64")
...     u = await iso.points("velocity", [[0.1, 0.2, 0.3]], time=0.3, spatial="lag6")

The methods and parameters are :class:`labclient.Lab`'s and :class:`labclient.RemoteDataset`'s, as coroutines;
large point sets are split as the sync client splits them and sent concurrently (at most the caller's
``max_concurrent`` at once), under the same retry policy (:mod:`labclient.retrying`). Cosmology simulations
and jobs stay on the sync client for now: ``dataset()`` of a simulation, and ``job=True``, say so.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import numpy as np

from labclient.batching import batch_slices
from labclient.codec import MSGPACK, unpack
from labclient.dataset import (
    RemoteDataset,
    join_paths,
    join_points,
    points_body,
    points_to_xarray,
    track_body,
)
from labclient.errors import InvalidRequest, error_for_status
from labclient.lab import DEFAULT_URL
from labclient.retrying import BUSY, IDEMPOTENT_METHODS, RetryPolicy
from labclient.transport import _detail, failure, prepare


class AsyncTransport:
    """One async connection pool to one server; the sync :class:`~labclient.transport.Transport`'s rules."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_wait: float = 30.0,
        pool_size: int = 16,
    ) -> None:
        headers = {"User-Agent": "labclient"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff, max_wait)
        self.client = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        binary: bool = True,
        idempotent: bool | None = None,
        busy: tuple[int, ...] = BUSY,
    ) -> httpx.Response:
        """As :meth:`labclient.transport.Transport.request`, awaited."""
        content, headers = prepare(body, binary)
        safe = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent

        async def send() -> httpx.Response:
            return await self.client.request(method, path, content=content, params=params, headers=headers)

        try:
            response = await self.policy.acall(send, idempotent=safe, busy=busy)
        except httpx.TransportError as exc:
            raise failure(
                method, f"{self.url}{path}", exc, self.timeout, safe, self.policy.retries + 1
            ) from exc
        if response.status_code >= 400:
            detail, code = _detail(response)
            raise error_for_status(response.status_code, detail, code)
        return response

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        if MSGPACK in response.headers.get("content-type", ""):
            return unpack(response.content)
        return response.json()


class AsyncLab:
    """A connection to a labservice server, with :class:`labclient.Lab`'s parameters and methods as coroutines."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        max_concurrency: int = 4,
        progress_threshold: int = 1_000_000,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 0.25,
    ) -> None:
        self.url = url or os.environ.get("LABSERVICE_URL") or DEFAULT_URL
        token = token if token is not None else os.environ.get("LABSERVICE_TOKEN") or None
        self.max_concurrency = max(1, int(max_concurrency))
        self.progress_threshold = int(progress_threshold)
        self.transport = AsyncTransport(
            self.url,
            token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            pool_size=max(16, self.max_concurrency),
        )

    def __repr__(self) -> str:
        return f"<AsyncLab {self.url}>"

    async def __aenter__(self) -> AsyncLab:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.aclose()

    async def health(self) -> dict[str, Any]:
        """The server's liveness report."""
        return await self.transport.call("GET", "/api/v1/health", binary=False)

    async def datasets(self) -> list[dict[str, Any]]:
        """Every dataset served: id, title, kind, grid summary."""
        return (await self.transport.call("GET", "/api/v1/datasets", binary=False))["datasets"]

    async def jobs(self) -> list[dict[str, Any]]:
        """This caller's batch jobs, newest first, as the server describes them."""
        return (await self.transport.call("GET", "/api/v1/jobs", binary=False))["jobs"]

    async def dataset(self, dataset_id: str) -> AsyncRemoteDataset:
        """Open one field dataset by id (its metadata and this caller's limits)."""
        info = await self.transport.call("GET", f"/api/v1/datasets/{dataset_id}", binary=False)
        if info.get("kind") == "cosmology":
            raise InvalidRequest(f"{dataset_id} is a cosmology simulation: open it with the sync Lab for now")
        return AsyncRemoteDataset(self, info)


class AsyncRemoteDataset(RemoteDataset):
    """:class:`labclient.RemoteDataset`'s queries as coroutines (its helpers and metadata are shared)."""

    lab: Any

    async def _abatched(
        self, what: str, pts: np.ndarray, ntimes: int, body: dict[str, Any], batch_size: int | None
    ) -> list[dict[str, Any]]:
        n = pts.shape[0] if pts.ndim == 2 and pts.shape[0] > 0 else 1
        slices = batch_slices(n, self._per_batch(ntimes, batch_size)) if pts.ndim == 2 else [slice(0, 1)]
        gate = asyncio.Semaphore(self._concurrency())

        async def send(s: slice) -> dict[str, Any]:
            chunk = pts[s] if pts.ndim == 2 else pts
            async with gate:
                return await self.lab.transport.call(
                    "POST", self._path(what), body={**body, "points": chunk}, idempotent=True
                )

        return list(await asyncio.gather(*(send(s) for s in slices)))

    async def query_points(  # type: ignore[override]
        self,
        variable: str,
        points: Any,
        time: float | None = None,
        times: tuple[float, float, float] | None = None,
        spatial: str = "lag4",
        temporal: str = "none",
        operator: str = "field",
        progress: bool | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """Like :meth:`points` but the whole answer: values, components, times, clipped flags."""
        pts = self._as_points(points)
        body, ntimes = points_body(variable, time, times, spatial, temporal, operator)
        return join_points(await self._abatched("points", pts, ntimes, body, batch_size), times is not None)

    async def points(  # type: ignore[override]
        self,
        variable: str,
        points: Any,
        time: float | None = None,
        times: tuple[float, float, float] | None = None,
        spatial: str = "lag4",
        temporal: str = "none",
        operator: str = "field",
        progress: bool | None = None,
        batch_size: int | None = None,
        job: bool = False,
        as_xarray: bool = False,
    ) -> Any:
        """Values of ``variable`` at N points (see :meth:`labclient.RemoteDataset.points`)."""
        if job:
            raise InvalidRequest(
                "jobs are submitted with the sync client for now: Lab(...).dataset(id).points(..., job=True)"
            )
        answer = await self.query_points(
            variable, points, time, times, spatial, temporal, operator, progress, batch_size
        )
        if as_xarray:
            return points_to_xarray(
                answer, self._as_points(points), variable, self.id, spatial, temporal, operator
            )
        return answer["values"]

    async def track(  # type: ignore[override]
        self,
        points: Any,
        t_start: float,
        t_end: float,
        dt: float,
        scheme: str = "rk2",
        every: float | None = None,
        spatial: str = "lag4",
        temporal: str = "pchip",
        progress: bool | None = None,
        batch_size: int | None = None,
        return_times: bool = False,
    ) -> Any:
        """Particle paths (T, N, 3) (see :meth:`labclient.RemoteDataset.track`)."""
        pts = self._as_points(points)
        body, nout = track_body(t_start, t_end, dt, scheme, every, spatial, temporal)
        positions, times = join_paths(await self._abatched("particles", pts, nout, body, batch_size))
        return (positions, times) if return_times else positions

    async def filter(  # type: ignore[override]
        self,
        variable: str,
        points: Any,
        time: float,
        width: float,
        operator: str = "field",
        progress: bool | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Box-filtered values at N points (see :meth:`labclient.RemoteDataset.filter`)."""
        pts = self._as_points(points)
        body = {"variable": variable, "time": float(time), "width": float(width), "operator": operator}
        parts = await self._abatched("filter", pts, 1, body, batch_size)
        return np.concatenate([np.asarray(p["values"]) for p in parts], axis=0)

    async def threshold(
        self, variable: str, time: float, threshold: float, **kwargs: Any
    ) -> dict[str, np.ndarray]:  # type: ignore[override]
        """Grid nodes where a scalar reaches ``threshold`` (see :meth:`labclient.RemoteDataset.threshold`)."""
        from labclient.dataset import _range_text

        body = {"variable": variable, "time": float(time), "threshold": float(threshold)}
        body["scalar"] = kwargs.get("scalar", "norm")
        body["spatial"] = kwargs.get("spatial", "fd4noint")
        for axis in "xyz":
            body[axis] = _range_text(kwargs.get(axis))
        out = await self.lab.transport.call("POST", self._path("threshold"), body=body, idempotent=True)
        return {k: np.asarray(out[k]) for k in ("indices", "positions", "values")}

    async def cutout(  # type: ignore[override]
        self,
        variable: str,
        time: float,
        x: Any = None,
        y: Any = None,
        z: Any = None,
        as_numpy: bool = False,
        **kwargs: Any,
    ) -> Any:
        """A subvolume at a stored time (see :meth:`labclient.RemoteDataset.cutout`; ``wait=False`` jobs
        stay on the sync client)."""
        if kwargs.get("wait", True) is False:
            raise InvalidRequest("cutout jobs are submitted with the sync client for now")
        params = self._cutout_params(variable, time, x, y, z, "msgpack")
        payload = await self.lab.transport.call("GET", self._path("cutout"), params=params)
        from labclient.cutouts import cutout_to_numpy, cutout_to_xarray

        return cutout_to_numpy(payload) if as_numpy else cutout_to_xarray(payload)

    async def download_cutout(  # type: ignore[override]
        self,
        path: str,
        variable: str,
        time: float,
        x: Any = None,
        y: Any = None,
        z: Any = None,
        format: str = "hdf5",
    ) -> str:
        """Save a cutout file to ``path``; return the path."""
        params = self._cutout_params(variable, time, x, y, z, format)
        response = await self.lab.transport.request("GET", self._path("cutout"), params=params, binary=False)
        with open(path, "wb") as f:
            f.write(response.content)
        return path

    async def slice_png(self, variable: str, time: float, **params: Any) -> bytes:  # type: ignore[override]
        """A PNG quick look of one plane of one component."""
        query = {"variable": variable, "time": repr(float(time)), **params}
        return (
            await self.lab.transport.request("GET", self._path("slice.png"), params=query, binary=False)
        ).content
