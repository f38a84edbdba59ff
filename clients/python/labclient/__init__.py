"""labclient: the thin Python client for labservice.

>>> from labclient import Lab
>>> lab = Lab("http://127.0.0.1:8000")            # or LABSERVICE_URL / LABSERVICE_TOKEN
>>> iso = lab.dataset("isotropic64")
>>> u = iso.points("velocity", [[0.1, 0.2, 0.3]], time=0.3, spatial="lag6")

With xarray installed, ``xr.open_dataset("labservice://127.0.0.1:8000/isotropic64", engine="labservice")``
opens a dataset lazily (see :mod:`labclient.xarray_backend`, imported on first use so that plain
``import labclient`` does not need xarray).
"""

from typing import Any

from labclient.aio import AsyncLab
from labclient.dataset import RemoteDataset
from labclient.errors import (
    AuthError,
    ConnectionFailed,
    InvalidRequest,
    LabClientError,
    LimitError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from labclient.lab import Lab

__version__ = "0.1.0"
__all__ = [
    "AsyncLab",
    "AuthError",
    "ConnectionFailed",
    "InvalidRequest",
    "Lab",
    "LabClientError",
    "LimitError",
    "NotFoundError",
    "RateLimitError",
    "RemoteDataset",
    "ServerError",
]

_XARRAY_NAMES = ("open_labservice", "LabserviceAccessor", "LabserviceBackendEntrypoint")


def __getattr__(name: str) -> Any:
    # The xarray engine and the ds.labservice accessor load only when asked for.
    if name == "xarray_backend" or name in _XARRAY_NAMES:
        from labclient._extras import require

        module = require("labclient.xarray_backend", f"labclient.{name}")
        return module if name == "xarray_backend" else getattr(module, name)
    raise AttributeError(f"module 'labclient' has no attribute {name!r}")
