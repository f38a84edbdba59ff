"""The in-process dataset: ``labservice.open_dataset(url)`` and the :class:`Dataset` facade.

A scientist next to the data (as on SciServer) and the web service both call these methods; they have
the same shape as the thin client's. Numerics live in :mod:`labservice.interpolation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labservice.errors import InvalidInput, OutOfDomain, unknown
from labservice.interpolation import derived
from labservice.interpolation.engine import PointEvaluator, as_points
from labservice.interpolation.filter import box_filter
from labservice.interpolation.operators import (
    OPERATORS,
    all_operators,
    component_names,
    derivative_order,
    finish,
)
from labservice.interpolation.temporal import TEMPORAL_METHODS, series, time_weight_matrix
from labservice.interpolation.threshold import SCALARS, ThresholdResult, threshold
from labservice.interpolation.tracking import SCHEMES, TrackResult, TrackState, advect
from labservice.interpolation.weights import METHODS
from labservice.storage.base import FieldStore
from labservice.storage.reader import ChunkReader

SPATIAL_METHODS = tuple(METHODS)
DERIVED = tuple(derived.DERIVED)
ALL_OPERATORS = all_operators()

__all__ = [
    "ALL_OPERATORS",
    "DERIVED",
    "OPERATORS",
    "SCALARS",
    "SCHEMES",
    "SPATIAL_METHODS",
    "TEMPORAL_METHODS",
    "Dataset",
    "PointsResult",
    "component_names",
    "open_dataset",
]


@dataclass
class PointsResult:
    """Answer of :meth:`Dataset.query_points`.

    Attributes
    ----------
    values : ndarray
        (N, ...) for one time, (T, N, ...) for a series; trailing axes flatten to ``components``.
    components : list of str
        Output column names, e.g. ``"dux/dy"``.
    times : ndarray
        The requested times (one entry for a single-time query).
    clipped : ndarray (N,) bool
        Points whose stencil was shifted one-sided at a non-periodic wall.
    series : bool
        Whether ``values`` has the leading time axis.
    """

    values: np.ndarray
    components: list[str]
    times: np.ndarray
    clipped: np.ndarray
    series: bool
    variable: str
    operator: str
    spatial: str
    temporal: str
    info: dict[str, Any] = field(default_factory=dict)


class Dataset:
    """One opened dataset: metadata, a cached chunk reader, and the measurement calls.

    ``store`` is public: the web layer and the jobs read its ``url``, ``storage_options`` and
    ``zarr_store`` (declared by :class:`~labservice.storage.base.FieldStore`).
    """

    store: FieldStore
    reader: ChunkReader

    def __init__(self, store: FieldStore, reader: ChunkReader) -> None:
        self.store = store
        self.reader = reader
        self.meta = store.meta
        self.url = store.url
        self._evaluators: dict[tuple[str, str, int], PointEvaluator] = {}

    def __repr__(self) -> str:
        return f"<Dataset {self.meta.id!r} {self.meta.grid.shape} at {self.url}>"

    # -- helpers -----------------------------------------------------------------------------------
    def _variable(self, variable: str) -> str:
        if variable not in self.meta.variables:
            raise unknown("variable", variable, self.meta.variables)
        return variable

    def _query_times(self, time: float | None, times) -> tuple[np.ndarray, bool]:
        if time is not None and times is not None:
            raise InvalidInput("give either time (one time) or times=(start, end, step) (a series), not both")
        if times is not None:
            if len(times) != 3:
                raise InvalidInput(f"times must be (start, end, step); got {times!r}")
            return series(float(times[0]), float(times[1]), float(times[2])), True
        if time is None:
            if len(self.meta.times) == 1:
                return np.array([self.meta.times[0]]), False
            raise InvalidInput(
                f"give a time in [{self.meta.times[0]:.6g}, {self.meta.times[-1]:.6g}] (this dataset stores "
                f"{len(self.meta.times)} time steps)"
            )
        return np.array([float(time)]), False

    def evaluator(self, variable: str, spatial: str, nder: int) -> PointEvaluator:
        """The (cached) :class:`PointEvaluator` of a variable, method and derivative order.

        Building one checks the method against the grid and packs the axes for the kernels; a service
        answering many small requests should not pay that on each of them.
        """
        key = (variable, spatial, int(nder))
        ev = self._evaluators.get(key)
        if ev is None:
            ev = self._evaluators[key] = PointEvaluator(self.reader, variable, spatial, nder)
        return ev

    def _nu(self) -> float | None:
        # "viscosity" is what the demo builder and ingest descriptors write; "nu" is the short form.
        nu = self.meta.extra.get("nu", self.meta.extra.get("viscosity"))
        return None if nu is None else float(nu)

    def _evaluate(self, variable, points, qtimes, spatial, temporal, operator):
        """Values (T, N, ...) and clipped flags; spatial interpolation once per needed stored step."""
        variable = self._variable(variable)
        nder = derivative_order(operator)
        is_derived = operator in derived.DERIVED
        ncomp = self.meta.variables[variable].ncomp
        if is_derived and ncomp != 3:
            raise InvalidInput(f"operator {operator!r} needs a 3-component velocity; {variable!r} has {ncomp}")
        if is_derived and operator == "dissipation" and self._nu() is None:
            derived.dissipation(np.zeros((0, 3, 3)), None)
        ev = self.evaluator(variable, spatial, nder)
        steps, W = time_weight_matrix(self.meta.times, qtimes, temporal)
        pts = as_points(points)
        if steps.size > 1 or pts.shape[0] > ev.batch:
            ev.check(pts)  # validate the whole domain before reading anything
        if steps.size == 1 and len(qtimes) == 1:
            e = ev(int(steps[0]), pts)
            raw = e.values[None] if W[0, 0] == 1.0 else W[0, 0] * e.values[None]
        else:  # each batch placed once, then evaluated once per needed stored step
            e = ev.combine(steps, W, pts)
            raw = e.values
        clipped = e.clipped
        if is_derived:
            return derived.compute(operator, raw, self._nu()), clipped
        return finish(raw, operator), clipped

    # -- public API --------------------------------------------------------------------------------
    def points(self, variable: str, points, time: float | None = None, times=None, spatial: str = "lag4",
               temporal: str = "none", operator: str = "field") -> np.ndarray:
        """Values of ``operator`` applied to ``variable`` at N points (x, y, z).

        Parameters
        ----------
        variable : str
            A stored variable (``velocity``, ``pressure``, ...).
        points : array_like (N, 3)
            Physical coordinates x, y, z.
        time : float, optional
            One time; or ``times=(start, end, step)`` for a series (adds a leading T axis).
        spatial : str
            One of :data:`SPATIAL_METHODS`.
        temporal : {"none", "linear", "pchip"}
        operator : str
            ``field`` (N, nc), ``gradient`` (N, nc, 3), ``hessian`` (N, nc, 6: xx xy xz yy yz zz),
            ``laplacian`` (N, nc), or a derived quantity of a velocity (:data:`DERIVED`).
        """
        return self.query_points(variable, points, time, times, spatial, temporal, operator).values

    def query_points(self, variable: str, points, time: float | None = None, times=None,
                     spatial: str = "lag4", temporal: str = "none", operator: str = "field") -> PointsResult:
        """Like :meth:`points`, with component names, times and per-point wall-clipping flags."""
        qtimes, is_series = self._query_times(time, times)
        values, clipped = self._evaluate(variable, points, qtimes, spatial, temporal, operator)
        comps = self.meta.variables[variable].components
        return PointsResult(
            values=values if is_series else values[0],
            components=component_names(comps, operator, variable),
            times=qtimes,
            clipped=clipped,
            series=is_series,
            variable=variable,
            operator=operator,
            spatial=spatial,
            temporal=temporal,
        )

    def inside(self, points) -> np.ndarray:
        """(N,) bool: points inside every non-periodic axis (periodic axes are always inside)."""
        p = as_points(points)
        ok = np.all(np.isfinite(p), axis=1)
        for a, name in enumerate("xyz"):
            axis = self.meta.grid.axis(name)
            if not axis.periodic:
                lo, hi = axis.bounds
                ok &= (p[:, a] >= lo) & (p[:, a] <= hi)
        return ok

    def track(self, points, t_start: float, t_end: float, dt: float, scheme: str = "rk2",
              every: float | None = None, spatial: str = "lag4", temporal: str = "pchip",
              variable: str = "velocity", steps: tuple[int, int] | None = None,
              state: TrackState | None = None) -> TrackResult:
        """Advect particles from t_start to t_end through the interpolated ``variable`` (3 components).

        Returns a :class:`~labservice.interpolation.tracking.TrackResult`: final positions, trajectories
        every ``every`` time units if asked, and flags for particles that left a non-periodic domain.
        ``steps`` and ``state`` run one window of a long run (see ``tracking.advect``; jobs use them).
        """
        variable = self._variable(variable)
        if self.meta.variables[variable].ncomp != 3:
            raise InvalidInput(f"tracking needs a 3-component velocity; {variable!r} has "
                               f"{self.meta.variables[variable].ncomp}")
        pts = as_points(points)
        for t in (t_start, t_end):
            if not (self.meta.times[0] <= t <= self.meta.times[-1]):
                raise OutOfDomain(f"tracking times must be in [{self.meta.times[0]:.6g}, "
                                  f"{self.meta.times[-1]:.6g}]; got {t!r}")
        ev = self.evaluator(variable, spatial, 0)

        def velocity(p: np.ndarray, t: float) -> np.ndarray:
            steps, W = time_weight_matrix(self.meta.times, [min(t, self.meta.times[-1])], temporal)
            u = np.zeros((p.shape[0], 3))
            for k, step in enumerate(steps):
                u += W[0, k] * ev(int(step), p).values[..., 0]
            return u

        return advect(velocity, self.inside, pts, t_start, t_end, dt, scheme=scheme, every=every,
                      steps=steps, state=state)

    def _time_index(self, time: float | None) -> int:
        # imported here, as in cutout(): importing labservice.cutout loads its format writers
        from labservice.cutout.region import time_index

        qtimes, _ = self._query_times(time, None)  # None: the only stored time, or a clear error
        return time_index(self.meta, float(qtimes[0]))

    def filter(self, variable: str, points, width: int, time: float | None = None,
               operator: str = "field") -> np.ndarray:
        """Box filter of ``width`` grid points (odd) at each point's nearest node, at a stored time.

        ``operator`` ``field`` gives (N, nc); ``gradient`` gives the FD4 gradient of the filtered field
        (N, nc, 3).
        """
        if operator not in ("field", "gradient"):
            raise unknown("filter operator", operator, ("field", "gradient"), error=InvalidInput)
        variable = self._variable(variable)
        return box_filter(self.reader, variable, self._time_index(time), points, width,
                          gradient=operator == "gradient")

    def threshold(self, variable: str, value: float, time: float | None = None, x=None, y=None, z=None,
                  scalar: str = "norm", spatial: str = "fd4noint", max_points: int = 1_000_000) -> ThresholdResult:
        """Grid nodes in a box (index ranges ``(start, stop)``) where ``scalar`` >= ``value``."""
        variable = self._variable(variable)
        return threshold(self.reader, variable, self._time_index(time), value, x=x, y=y, z=z, scalar=scalar,
                         spatial=spatial, max_points=max_points, nu=self._nu())

    def cutout(self, variable: str, time: float | None = None, x=None, y=None, z=None):
        """A subvolume at a stored time: ``x=(start, stop, step)`` etc., 0-based, stop exclusive."""
        from labservice.cutout import read_cutout

        return read_cutout(self.reader, self._variable(variable), self._time_index(time), x=x, y=y, z=z)

    def close(self) -> None:
        self.reader.close()
        self.store.close()


def open_dataset(url: str, storage_options: dict[str, Any] | None = None, cache=None) -> Dataset:
    """Open a dataset at a local path or fsspec URL (``memory://``, ``s3://``) for in-process queries.

    Parameters
    ----------
    url : str
    storage_options : dict, optional
        fsspec options (S3 endpoint, keys).
    cache : ChunkCache, optional
        Chunk cache; the process-wide one by default.
    """
    from labservice.storage import ChunkReader, open_store

    store = open_store(url, storage_options=storage_options)
    return Dataset(store, ChunkReader(store, cache=cache))
