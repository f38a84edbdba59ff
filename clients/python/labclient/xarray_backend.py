"""Open a labservice dataset lazily in xarray, and ask the server for point values through ``ds.labservice``.

The engine is registered as the ``xarray.backends`` entry point ``labservice``::

    >>> import xarray as xr
    >>> ds = xr.open_dataset("labservice://127.0.0.1:8000/isotropic64", engine="labservice", chunks="auto")
    >>> ds["velocity"].isel(time=0, z=slice(0, 8)).mean().compute()      # reads only the chunks it needs
    >>> ds.labservice.sel_points("velocity", x=[0.1, 0.2], y=0.3, z=0.4, time=6.0)   # server interpolation

URLs read ``labservice://host[:port][/prefix]/<dataset id>`` (plain HTTP), or ``labservice+https://...``
(or ``https=True``) for HTTPS; ``labservice+http://`` is the same as ``labservice://``. The dataset is
opened with stock zarr over the server's read-only zarr view (``/api/v1/datasets/<id>/zarr/``): with
``chunks={}`` the result is exactly what ``xr.open_zarr`` on that URL gives (dask arrays chunked like the
stored inner chunks, physical coordinates, the dataset's attributes), plus ``labservice_server`` and
``labservice_dataset`` attributes that the accessor uses. Without ``chunks`` it is lazy without dask, as
any xarray engine; :func:`open_labservice` gives a dask-backed Dataset directly.

Prefer ``chunks="auto"`` for bulk reads: dask then makes whole shards (or large multiples of the inner
chunks) one task, which reads a shard in one request, while a small slice still fetches only the shard
index and the inner chunks it touches. ``chunks={}`` (the ``open_zarr`` default) makes every inner chunk
a task that fetches its shard's index again. (The netCDF4 engine claims every ``scheme://`` URL when it
is installed, so pass ``engine="labservice"``.)

The token comes from ``token=`` (also through ``backend_kwargs``), ``storage_options={"token": ...}``, or
``$LABSERVICE_TOKEN``. It travels as an ``Authorization`` header, never in the attributes. Reads answered
429 or 503 (the server's concurrency and byte budgets) are retried after the server's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

try:  # xarray shows this message when the engine fails to load ("unrecognized engine" follows)
    import aiohttp
    import xarray as xr
    import zarr  # noqa: F401 - xarray's zarr engine, which this one wraps
    from xarray.backends import BackendEntrypoint
except ImportError as _exc:  # pragma: no cover - depends on the install
    from labclient._extras import MissingExtra, hint

    raise MissingExtra(
        f"the labservice xarray engine needs {_exc.name}: {hint(_exc.name or 'xarray')}"
    ) from _exc

from labclient.errors import InvalidRequest
from labclient.lab import Lab
from labclient.retrying import NOT_SENT, REACHED, TIMED_OUT, RetryPolicy

SCHEMES = {"labservice": "http", "labservice+http": "http", "labservice+https": "https"}
ATTR_SERVER = "labservice_server"
ATTR_DATASET = "labservice_dataset"
ATTR_TOKEN_ID = "labservice_token_id"  # the public id part of lab_<id>_<secret>, never the secret
# Zarr reads fan out in parallel: a few more retries than a single call, the same jittered policy.
POLICY = RetryPolicy(retries=8, backoff=0.25, max_wait=30.0)

# Tokens and connections live here, keyed by (server URL, token id), so secrets never reach attributes.
_TOKENS: dict[tuple[str, str | None], str | None] = {}
_LABS: dict[tuple[str, str | None], Lab] = {}
_REMOTES: dict[tuple[str, str | None, str], Any] = {}
_LOCK = threading.Lock()

__all__ = [
    "LabserviceAccessor",
    "LabserviceBackendEntrypoint",
    "open_labservice",
    "parse_url",
    "retrying_client",
]


# -- URLs, tokens and HTTP ------------------------------------------------------------------------------
def parse_url(url: str, https: bool | None = None) -> tuple[str, str]:
    """Split ``labservice://host:port[/prefix]/<id>`` into (server base URL, dataset id).

    Parameters
    ----------
    url
        A ``labservice://``, ``labservice+http://`` or ``labservice+https://`` URL.
    https
        Force HTTPS (True) or HTTP (False) whatever the scheme says.
    """
    parts = urlsplit(str(url))
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise InvalidRequest(
            f"a labservice URL starts with labservice://, labservice+http:// or labservice+https://; got {url!r}"
        )
    path = parts.path.strip("/")
    if not parts.netloc or not path:
        raise InvalidRequest(f"a labservice URL reads labservice://host:port/<dataset id>; got {url!r}")
    prefix, _, dataset_id = path.rpartition("/")
    if https is not None:
        scheme = "https" if https else "http"
    base = f"{scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    return base, dataset_id


def zarr_url(server: str, dataset_id: str) -> str:
    """The folder URL of a dataset's zarr view (what ``xr.open_zarr`` opens)."""
    return f"{server.rstrip('/')}/api/v1/datasets/{dataset_id}/zarr/"


def _lab(server: str, token: str | None) -> Lab:
    """One shared :class:`Lab` per (server, token)."""
    with _LOCK:
        lab = _LABS.get((server, token))
        if lab is None:
            lab = _LABS[(server, token)] = Lab(server, token=token if token else "")
        return lab


def _aiohttp_failure(exc: BaseException) -> str | None:
    """Classify an aiohttp failure for the retry policy (see :mod:`labclient.retrying`)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return NOT_SENT
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return TIMED_OUT
    if isinstance(exc, aiohttp.ClientError):
        return REACHED
    return None


async def _retry_busy(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """aiohttp client middleware: zarr's reads under the client's one retry policy (busy answers after
    the server's Retry-After, connection failures with jittered backoff; reads are idempotent)."""

    async def send() -> aiohttp.ClientResponse:
        return await handler(request)

    return await POLICY.acall(
        send, idempotent=True, classify=_aiohttp_failure, before_sleep=lambda response: response.release()
    )


async def retrying_client(**kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session that retries busy answers; pass as ``storage_options={"get_client": ...}``."""
    return aiohttp.ClientSession(middlewares=(_retry_busy,), **kwargs)


def _storage_options(token: str | None, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """fsspec HTTP options: the user's, plus the token header and the retrying session."""
    options = dict(storage_options or {})
    client_kwargs = dict(options.get("client_kwargs", {}))
    headers = dict(client_kwargs.get("headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    client_kwargs["headers"] = headers
    options["client_kwargs"] = client_kwargs
    options.setdefault("get_client", retrying_client)
    return options


# -- opening ---------------------------------------------------------------------------------------------
def _connect(
    url: str, token: str | None, storage_options: dict[str, Any] | None, https: bool | None
) -> tuple[str, str, dict[str, Any]]:
    """(server, dataset id, fsspec options) for a URL; checks the dataset and the token with one request."""
    options = dict(storage_options or {})
    token = token or options.pop("token", None) or os.environ.get("LABSERVICE_TOKEN") or None
    options.pop("token", None)
    server, dataset_id = parse_url(url, https)
    # One plain request first, so a bad token or an unknown id gives the server's own explanation.
    _lab(server, token).transport.request(
        "GET", f"/api/v1/datasets/{dataset_id}/zarr/zarr.json", binary=False
    )
    return server, dataset_id, _storage_options(token, options)


def _token_id(token: str | None) -> str | None:
    return token.split("_")[1] if token and token.count("_") >= 2 else None


def _remember(server: str, token: str | None) -> str | None:
    """Keep the token in this process for the accessor; return its public id."""
    with _LOCK:
        _TOKENS[(server, _token_id(token))] = token
    return _token_id(token)


def _tag(ds: xr.Dataset, server: str, dataset_id: str, options: dict[str, Any]) -> xr.Dataset:
    auth = options["client_kwargs"]["headers"].get("Authorization", "")
    token_id = _remember(server, auth.removeprefix("Bearer ") or None)
    ds.attrs[ATTR_SERVER] = server
    ds.attrs[ATTR_DATASET] = dataset_id
    if token_id:
        ds.attrs[ATTR_TOKEN_ID] = token_id
    return ds


def open_labservice(
    url: str,
    *,
    token: str | None = None,
    storage_options: dict[str, Any] | None = None,
    https: bool | None = None,
    chunks: Any = "auto",
    drop_variables: str | Iterable[str] | None = None,
    **open_zarr_kwargs: Any,
) -> xr.Dataset:
    """Open a labservice dataset lazily; the same Dataset as ``xr.open_zarr`` on its zarr view.

    Parameters
    ----------
    url
        ``labservice://host:port/<id>`` (see :func:`parse_url`).
    token
        Bearer token; else ``storage_options["token"]``, else ``$LABSERVICE_TOKEN``, else public access.
    storage_options
        fsspec HTTP options (``client_kwargs``, ``get_client``, ...).
    https
        Force HTTPS (True) or HTTP (False).
    chunks
        Passed to ``xr.open_zarr``; default ``"auto"``: dask chunks of whole shards where they fit in dask's
        ``array.chunk-size`` (``{}`` gives one task per stored inner chunk, as plain ``open_zarr``).
    drop_variables
        Variables not to open.
    **open_zarr_kwargs
        Anything else ``xr.open_zarr`` takes.

    Returns
    -------
    xarray.Dataset
        Dask-backed, with attributes ``labservice_server`` and ``labservice_dataset``.
    """
    server, dataset_id, options = _connect(url, token, storage_options, https)
    ds = xr.open_zarr(
        zarr_url(server, dataset_id),
        storage_options=options,
        consolidated=True,
        chunks=chunks,
        drop_variables=drop_variables,
        **open_zarr_kwargs,
    )
    return _tag(ds, server, dataset_id, options)


class LabserviceBackendEntrypoint(BackendEntrypoint):
    """xarray engine ``labservice``: ``xr.open_dataset("labservice://host:port/<id>", engine="labservice")``.

    It opens the server's zarr view with xarray's own zarr engine, so ``chunks``, decoding options and
    everything downstream behave as for ``xr.open_zarr``.
    """

    description = "Open a labservice dataset lazily through its read-only zarr view over HTTP"
    url = "https://github.com/labservice/labservice#xarray"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "mask_and_scale",
        "decode_times",
        "concat_characters",
        "decode_coords",
        "use_cftime",
        "decode_timedelta",
        "token",
        "storage_options",
        "https",
    )

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        token: str | None = None,
        storage_options: dict[str, Any] | None = None,
        https: bool | None = None,
        **decoders: Any,
    ) -> xr.Dataset:
        from xarray.backends.zarr import ZarrBackendEntrypoint

        server, dataset_id, options = _connect(str(filename_or_obj), token, storage_options, https)
        ds = ZarrBackendEntrypoint().open_dataset(
            zarr_url(server, dataset_id),
            storage_options=options,
            consolidated=True,
            drop_variables=drop_variables,
            **decoders,
        )
        return _tag(ds, server, dataset_id, options)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        return urlsplit(str(filename_or_obj)).scheme.lower() in SCHEMES


# -- the accessor ----------------------------------------------------------------------------------------
@xr.register_dataset_accessor("labservice")
class LabserviceAccessor:
    """``ds.labservice``: point queries answered by the server's own interpolation (no chunk downloads).

    Works on datasets opened with ``engine="labservice"`` (they carry the server and dataset id in their
    attributes). For one opened with plain ``xr.open_zarr``, call :meth:`connect` first.
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def connect(self, server: str, token: str | None = None) -> xr.Dataset:
        """Record the server URL (e.g. ``http://127.0.0.1:8000``) and token on this Dataset; return it."""
        server = server.rstrip("/")
        token_id = _remember(server, token or os.environ.get("LABSERVICE_TOKEN") or None)
        self._ds.attrs[ATTR_SERVER] = server
        self._ds.attrs.setdefault(ATTR_DATASET, self._ds.attrs.get("id"))
        if token_id:
            self._ds.attrs[ATTR_TOKEN_ID] = token_id
        return self._ds

    @property
    def server(self) -> str:
        server = self._ds.attrs.get(ATTR_SERVER)
        if not server:
            raise InvalidRequest(
                "this Dataset does not say which labservice server it came from; open it with "
                "xr.open_dataset('labservice://host:port/<id>', engine='labservice') or call "
                "ds.labservice.connect('http://host:port', token)"
            )
        return str(server)

    @property
    def dataset_id(self) -> str:
        found = self._ds.attrs.get(ATTR_DATASET) or self._ds.attrs.get("id")
        if not found:
            raise InvalidRequest("this Dataset has no dataset id attribute; call ds.labservice.connect(...)")
        return str(found)

    @property
    def remote(self) -> Any:
        """The :class:`labclient.RemoteDataset` behind this Dataset."""
        server = self.server
        with _LOCK:
            token = _TOKENS.get((server, self._ds.attrs.get(ATTR_TOKEN_ID)))
        # a Dataset unpickled in another process finds no token here: fall back to the environment
        token = token or os.environ.get("LABSERVICE_TOKEN") or None
        key = (server, token, self.dataset_id)
        with _LOCK:
            found = _REMOTES.get(key)
        if found is None:  # one metadata request per dataset and token, not one per query
            found = _lab(server, token).dataset(self.dataset_id)
            with _LOCK:
                _REMOTES[key] = found
        return found

    def points(
        self,
        variable: str,
        points: Any,
        time: float | None = None,
        *,
        times: tuple[float, float, float] | None = None,
        spatial: str = "lag4",
        temporal: str = "none",
        operator: str = "field",
        **kwargs: Any,
    ) -> xr.DataArray:
        """Values of ``variable`` at N points (physical coordinates, (N, 3) as x, y, z), from the server.

        Same parameters as :meth:`labclient.RemoteDataset.points`. Returns a DataArray with dims
        (``points``, ``<variable>_component``) for a field, (``points``, ``<operator>_component``) for
        other operators, with a leading ``time`` dim for a series.
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        answer = self.remote.query_points(
            variable,
            pts,
            time=time,
            times=times,
            spatial=spatial,
            temporal=temporal,
            operator=operator,
            **kwargs,
        )
        columns = list(answer["components"])
        lead = (answer["times"].size,) if times is not None else ()
        values = np.asarray(answer["values"]).reshape(*lead, pts.shape[0], len(columns))
        comp_dim = f"{variable}_component" if operator == "field" else f"{operator}_component"
        dims = (*(("time",) if lead else ()), "points", comp_dim)
        coords: dict[str, Any] = {
            "x": ("points", pts[:, 0]),
            "y": ("points", pts[:, 1]),
            "z": ("points", pts[:, 2]),
            comp_dim: columns,
            "time": ("time", answer["times"]) if lead else float(answer["times"][0]),
        }
        attrs = {
            "spatial": spatial,
            "temporal": temporal,
            "operator": operator,
            ATTR_DATASET: self.dataset_id,
        }
        return xr.DataArray(values, dims=dims, coords=coords, name=variable, attrs=attrs)

    def sel_points(
        self,
        variable: str | None = None,
        *,
        x: Any,
        y: Any,
        z: Any,
        time: float,
        spatial: str = "lag4",
        temporal: str = "none",
        operator: str = "field",
    ) -> xr.DataArray:
        """Like ``ds.interp`` at scattered points: ``x``, ``y``, ``z`` broadcast together to a ``points``
        dim, at one ``time``, interpolated on the server. ``variable`` may be left out when the Dataset
        has only one.
        """
        if variable is None:
            names = list(self._ds.data_vars)
            if len(names) != 1:
                raise InvalidRequest(f"say which variable to read: one of {sorted(names)}")
            variable = str(names[0])
        xs, ys, zs = (
            np.ravel(a) for a in np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, z)))
        )
        return self.points(
            variable,
            np.stack([xs, ys, zs], axis=-1),
            time=time,
            spatial=spatial,
            temporal=temporal,
            operator=operator,
        )
