"""labclient: the thin Python client for labservice.

>>> from labclient import Lab
>>> lab = Lab("http://127.0.0.1:8000")            # or LABSERVICE_URL / LABSERVICE_TOKEN
>>> iso = lab.dataset("isotropic64")
>>> u = iso.points("velocity", [[0.1, 0.2, 0.3]], time=0.3, spatial="lag6")
"""

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
