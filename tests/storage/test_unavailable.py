"""A store that cannot be reached gives StorageUnavailable, not a raw client error."""

from __future__ import annotations

import pytest

from labservice.devserver import free_ports
from labservice.errors import StorageUnavailable
from labservice.storage import open_store


@pytest.mark.parametrize("path", ["ds.zarr", "ds.h5"])
def test_unreachable_s3_endpoint(path: str) -> None:
    (port,) = free_ports(1)  # a port nobody listens on
    options = {
        "key": "k", "secret": "s", "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    with pytest.raises(StorageUnavailable, match=f"cannot reach the store at s3://nowhere/{path}"):
        open_store(f"s3://nowhere/{path}", storage_options=options)
