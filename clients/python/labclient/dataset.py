"""One remote dataset: point queries, particle tracking, filters, thresholds, cutouts and quick looks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from labclient.batching import batch_slices, run_batches
from labclient.errors import InvalidRequest

if TYPE_CHECKING:
    from labclient.lab import Lab

RangeArg = str | tuple[int, ...] | list[int] | slice | None


def _range_text(value: RangeArg) -> str | None:
    """(start, stop[, step]) or a slice -> 'start:stop:step' (0-based grid indices, stop exclusive)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, slice):
        parts = [value.start, value.stop, value.step]
    else:
        parts = list(value)
    return ":".join("" if p is None else str(int(p)) for p in parts)


def _series_count(times: tuple[float, float, float]) -> int:
    start, end, step = (float(v) for v in times)
    if not step > 0:
        return 1  # the server explains what is wrong
    return int(math.floor((end - start) / step + 1e-9)) + 1


def points_body(
    variable: str,
    time: float | None,
    times: tuple[float, float, float] | None,
    spatial: str,
    temporal: str,
    operator: str,
) -> tuple[dict[str, Any], int]:
    """The body of a points request (without the points) and the times it asks for per point."""
    body: dict[str, Any] = {
        "variable": variable,
        "spatial": spatial,
        "temporal": temporal,
        "operator": operator,
    }
    if time is not None:
        body["time"] = float(time)
    if times is not None:
        if len(times) != 3:
            raise InvalidRequest(f"times must be (start, end, step); got {times!r}")
        body["times"] = dict(zip(("start", "end", "step"), (float(v) for v in times), strict=True))
    return body, 1 if times is None else _series_count(times)


def _join(arrays: list[np.ndarray], axis: int) -> np.ndarray:
    """The batches' arrays end to end, writable; one writable batch (a view of the buffer its answer was
    read into) is returned as it is, without a copy."""
    if len(arrays) == 1:
        return arrays[0] if arrays[0].flags.writeable else arrays[0].copy()
    return np.concatenate(arrays, axis=axis)


def join_points(parts: list[dict[str, Any]], series: bool) -> dict[str, Any]:
    """One answer from the batches' answers, in input order."""
    values = _join([np.asarray(p["values"]) for p in parts], axis=1 if series else 0)
    clipped = None
    if all(p.get("clipped") is not None for p in parts):
        clipped = _join([np.asarray(p["clipped"], dtype=bool) for p in parts], axis=0)
    return {
        "values": values,
        "components": parts[0]["components"],
        "times": np.asarray(parts[0]["times"], dtype=np.float64),
        "clipped": clipped,
    }


def track_body(
    t_start: float, t_end: float, dt: float, scheme: str, every: float | None, spatial: str, temporal: str
) -> tuple[dict[str, Any], int]:
    """The body of a particles request and the outputs per particle, counted as the server bills them
    (start, every interval, plus a possible final t_end)."""
    body: dict[str, Any] = {
        "t_start": float(t_start),
        "t_end": float(t_end),
        "dt": float(dt),
        "scheme": scheme,
        "every": None if every is None else float(every),
        "spatial": spatial,
        "temporal": temporal,
    }
    nout = 2 if every is None or not every > 0 else int(math.floor(abs(t_end - t_start) / every + 1e-9)) + 2
    return body, nout


def join_paths(parts: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    positions = _join([np.asarray(p["positions"]) for p in parts], axis=1)
    return positions, np.asarray(parts[0]["times"], dtype=np.float64)


def points_to_xarray(
    answer: dict[str, Any],
    points: np.ndarray,
    variable: str,
    dataset_id: str,
    spatial: str,
    temporal: str,
    operator: str,
) -> Any:
    """A point answer as a DataArray with dims (time, point, component), as cutouts are labelled.

    Coordinates: ``time`` (the answer's times; length 1 for one time), ``point`` (0..N-1) with ``x``, ``y``,
    ``z`` along it, and ``component`` (the server's column names, e.g. ``ux`` or ``dux/dy``).
    """
    from labclient._extras import require

    xr = require("xarray", "labelled point results (as_xarray=True)")
    times = np.asarray(answer["times"], dtype=np.float64)
    columns = list(answer["components"])
    values = np.asarray(answer["values"]).reshape(times.size, points.shape[0], len(columns))
    coords = {
        "time": ("time", times),
        "point": ("point", np.arange(points.shape[0])),
        "x": ("point", points[:, 0]),
        "y": ("point", points[:, 1]),
        "z": ("point", points[:, 2]),
        "component": ("component", np.array(columns, dtype=object)),
    }
    attrs = {"dataset": dataset_id, "spatial": spatial, "temporal": temporal, "operator": operator}
    return xr.DataArray(
        values, dims=("time", "point", "component"), coords=coords, name=variable, attrs=attrs
    )


class RemoteDataset:
    """A dataset served by a labservice server; get one with ``Lab.dataset(id)``.

    Attributes
    ----------
    id : str
    meta : dict
        The full metadata document: grid, times, variables, methods, and this caller's ``limits``.
    """

    def __init__(self, lab: Lab, info: dict[str, Any]) -> None:
        self.lab = lab
        self.info = info
        self.id: str = info["id"]
        self.meta: dict[str, Any] = info["metadata"]
        self.limits: dict[str, Any] = info["limits"]
        self.methods: dict[str, Any] = info.get("methods", {})

    def __repr__(self) -> str:
        return f"<RemoteDataset {self.id!r} grid={self.info['grid']['shape']} variables={sorted(self.meta['variables'])}>"

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.meta["times"], dtype=np.float64)

    @property
    def variables(self) -> list[str]:
        return sorted(self.meta["variables"])

    # -- helpers -----------------------------------------------------------------------------------
    def _path(self, what: str) -> str:
        return f"/api/v1/datasets/{self.id}/{what}"

    def _concurrency(self) -> int:
        return max(1, min(self.lab.max_concurrency, int(self.limits.get("max_concurrent", 1))))

    def _per_batch(self, ntimes: int, batch_size: int | None) -> int:
        limit = int(self.limits["points_per_request"])
        per = max(1, limit // max(ntimes, 1))
        return min(per, batch_size) if batch_size else per

    def _show_progress(self, progress: bool | None, n: int) -> bool:
        return bool(progress) if progress is not None else n >= self.lab.progress_threshold

    @staticmethod
    def _as_points(points: Any) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1 and pts.size == 3:
            pts = pts[None, :]
        return np.ascontiguousarray(pts)

    def _batched(
        self,
        what: str,
        pts: np.ndarray,
        ntimes: int,
        body: dict[str, Any],
        progress: bool | None,
        batch_size: int | None,
    ) -> list[dict[str, Any]]:
        # A malformed array goes in one request so the server's message explains it.
        n = pts.shape[0] if pts.ndim == 2 and pts.shape[0] > 0 else 1
        slices = batch_slices(n, self._per_batch(ntimes, batch_size)) if pts.ndim == 2 else [slice(0, 1)]

        def send(s: slice) -> dict[str, Any]:
            chunk = pts[s] if pts.ndim == 2 else pts
            # queries only read: safe to send again when an answer is lost (at most once after a timeout)
            return self.lab.transport.call(
                "POST", self._path(what), body={**body, "points": chunk}, idempotent=True
            )

        return run_batches(send, slices, self._concurrency(), self._show_progress(progress, n), desc=what)

    # -- queries -----------------------------------------------------------------------------------
    def query_points(
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
        """Like :meth:`points` but returns the whole answer: values, components, times, clipped flags."""
        pts = self._as_points(points)
        body, ntimes = points_body(variable, time, times, spatial, temporal, operator)
        parts = self._batched("points", pts, ntimes, body, progress, batch_size)
        return join_points(parts, series=times is not None)

    def points(
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
        """Values of ``variable`` at N points.

        Parameters
        ----------
        variable
            e.g. ``"velocity"``.
        points
            (N, 3) coordinates in physical units.
        time, times
            One time, or a series ``(start, end, step)``.
        spatial, temporal
            Interpolation methods (see ``meta`` / the dataset's ``methods``).
        operator
            ``field``, ``gradient``, ``hessian`` or ``laplacian``.
        progress
            Show a progress bar (default: only for large requests).
        batch_size
            Points per request (default: as many as the caller's limit allows).
        job
            Run as a batch job instead (millions of points, long series); returns a
            :class:`labclient.jobs.Job` whose ``result()`` is the array.
        as_xarray
            Return a labelled ``xarray.DataArray`` instead (see :func:`points_to_xarray`).

        Returns
        -------
        ndarray
            (N, nc) for a field or Laplacian, (N, nc, 3) for a gradient, (N, nc, 6) for a Hessian; a series
            adds a leading time axis. With ``as_xarray``: a DataArray with dims (time, point, component).
        """
        if job:
            from labclient.jobs import submit_job

            request = {
                "kind": "points",
                "dataset": self.id,
                "variable": variable,
                "time": time,
                "times": None if times is None else [float(v) for v in times],
                "spatial": spatial,
                "temporal": temporal,
                "operator": operator,
            }
            return submit_job(self.lab, request, points=self._as_points(points))
        answer = self.query_points(
            variable, points, time, times, spatial, temporal, operator, progress, batch_size
        )
        if as_xarray:
            return points_to_xarray(
                answer, self._as_points(points), variable, self.id, spatial, temporal, operator
            )
        return answer["values"]

    def track(
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
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Particle paths: positions (T, N, 3) at the output times (and those times if asked)."""
        pts = self._as_points(points)
        body, nout = track_body(t_start, t_end, dt, scheme, every, spatial, temporal)
        positions, times = join_paths(self._batched("particles", pts, nout, body, progress, batch_size))
        return (positions, times) if return_times else positions

    def filter(
        self,
        variable: str,
        points: Any,
        time: float,
        width: float,
        operator: str = "field",
        progress: bool | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Box-filtered values (or gradients) of ``variable`` at N points; ``width`` in physical units."""
        pts = self._as_points(points)
        body = {"variable": variable, "time": float(time), "width": float(width), "operator": operator}
        parts = self._batched("filter", pts, 1, body, progress, batch_size)
        return _join([np.asarray(p["values"]) for p in parts], axis=0)

    def threshold(
        self,
        variable: str,
        time: float,
        threshold: float,
        scalar: str = "norm",
        x: RangeArg = None,
        y: RangeArg = None,
        z: RangeArg = None,
        spatial: str = "fd4noint",
    ) -> dict[str, np.ndarray]:
        """Grid nodes in a box where ``scalar`` of ``variable`` reaches ``threshold``.

        ``scalar`` is ``norm``, ``value``, or a velocity-gradient quantity (``vorticity``, ``q_criterion``,
        ...; see ``methods["threshold_scalars"]``). Box ranges are ``(start, stop)`` grid indices. Returns
        ``indices`` (M, 3) as (ix, iy, iz), ``positions`` (M, 3) and ``values`` (M,).
        """
        body = {
            "variable": variable,
            "time": float(time),
            "threshold": float(threshold),
            "scalar": scalar,
            "x": _range_text(x),
            "y": _range_text(y),
            "z": _range_text(z),
            "spatial": spatial,
        }
        out = self.lab.transport.call("POST", self._path("threshold"), body=body, idempotent=True)
        return {k: np.asarray(out[k]) for k in ("indices", "positions", "values")}

    # -- cutouts -----------------------------------------------------------------------------------
    def _cutout_params(
        self, variable: str, time: float, x: RangeArg, y: RangeArg, z: RangeArg, fmt: str
    ) -> dict:
        params: dict[str, Any] = {"variable": variable, "time": repr(float(time)), "format": fmt}
        for name, value in (("x", x), ("y", y), ("z", z)):
            text = _range_text(value)
            if text is not None:
                params[name] = text
        return params

    def cutout(
        self,
        variable: str,
        time: float,
        x: RangeArg = None,
        y: RangeArg = None,
        z: RangeArg = None,
        as_numpy: bool = False,
        wait: bool = True,
        formats: tuple[str, ...] = ("zarr",),
    ) -> Any:
        """A subvolume at a stored time: an xarray Dataset (dims z, y, x, component) with physical coords.

        ``x``, ``y``, ``z`` are ``(start, stop[, step])`` grid indices, 0-based, stop exclusive; wrapping is
        allowed on periodic axes. With ``as_numpy=True`` returns a dict of numpy arrays instead. With
        ``wait=False`` the cutout runs as a batch job (any size) and a :class:`labclient.jobs.Job` is
        returned; ``time`` may then also be a list of stored times and ``formats`` picks the outputs.
        """
        if not wait:
            from labclient.jobs import submit_job

            request = {
                "kind": "cutout",
                "dataset": self.id,
                "variable": variable,
                "times": [float(t) for t in np.atleast_1d(time)],
                "x": _range_text(x),
                "y": _range_text(y),
                "z": _range_text(z),
                "formats": list(formats),
            }
            return submit_job(self.lab, request)
        params = self._cutout_params(variable, time, x, y, z, "msgpack")
        payload = self.lab.transport.call("GET", self._path("cutout"), params=params)
        from labclient.cutouts import cutout_to_numpy, cutout_to_xarray

        return cutout_to_numpy(payload) if as_numpy else cutout_to_xarray(payload)

    def download_cutout(
        self,
        path: str,
        variable: str,
        time: float,
        x: RangeArg = None,
        y: RangeArg = None,
        z: RangeArg = None,
        format: str = "hdf5",
    ) -> str:
        """Save a cutout file (hdf5, netcdf, zarr, npy, msgpack, xdmf) to ``path``; return the path."""
        params = self._cutout_params(variable, time, x, y, z, format)
        response = self.lab.transport.request("GET", self._path("cutout"), params=params, binary=False)
        with open(path, "wb") as f:
            f.write(response.content)
        return path

    def slice_png(self, variable: str, time: float, **params: Any) -> bytes:
        """A PNG quick look of one plane of one component (see the API docs for the parameters)."""
        query = {"variable": variable, "time": repr(float(time)), **params}
        return self.lab.transport.request("GET", self._path("slice.png"), params=query, binary=False).content
