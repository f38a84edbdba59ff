"""Ranged reads of shard bytes on S3 through obstore (Rust ``object_store``), in place of s3fs.

Only the hot read path of :class:`~labservice.storage.zarr_.ZarrStore` (shard indexes and inner chunks)
uses it; metadata and writes stay on zarr's ``FsspecStore``. It costs far less CPU per GET than s3fs and
aiobotocore (``benchmarks/s3.py``: 3x the cold point rate on a busy 2-core machine). It is used only when
the storage options are ones we can translate exactly (an explicit key and secret, or ``anon``, and an
optional endpoint, region and timeouts); anything else keeps s3fs, which knows every botocore setting.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

__all__ = ["MAX_CONCURRENT_GETS", "ObstoreReads", "obstore_reads"]

MAX_CONCURRENT_GETS = 10  # like aiobotocore's default pool, which bounds the s3fs path
_KNOWN = {"key", "secret", "anon", "client_kwargs", "config_kwargs", "endpoint_url", "skip_instance_cache"}


def obstore_reads(url: str, storage_options: dict[str, Any] | None) -> ObstoreReads | None:
    """An :class:`ObstoreReads` for ``s3://bucket/prefix``, or None when obstore is missing or the options
    hold anything we cannot translate exactly."""
    so = dict(storage_options or {})
    if not url.startswith("s3://") or not set(so) <= _KNOWN:
        return None
    client = dict(so.get("client_kwargs") or {})
    config = dict(so.get("config_kwargs") or {})
    if not set(client) <= {"endpoint_url", "region_name"} or not set(config) <= {
            "retries", "connect_timeout", "read_timeout"}:
        return None
    if not so.get("anon") and not (so.get("key") and so.get("secret")):
        return None  # botocore's credential chain (profiles, instance roles) stays with s3fs
    try:
        import obstore  # noqa: F401
    except ImportError:
        return None
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    endpoint = client.get("endpoint_url") or so.get("endpoint_url")
    kwargs: dict[str, Any] = {"region": client.get("region_name") or "us-east-1"}
    if so.get("anon"):
        kwargs["skip_signature"] = True
    else:
        kwargs.update(access_key_id=so["key"], secret_access_key=so["secret"])
    client_options: dict[str, Any] = {}
    if endpoint:
        kwargs.update(endpoint=endpoint, virtual_hosted_style_request=False)
        client_options["allow_http"] = endpoint.startswith("http://")
    if "connect_timeout" in config:
        client_options["connect_timeout"] = f"{float(config['connect_timeout'])}s"
    if "read_timeout" in config:
        client_options["timeout"] = f"{float(config['read_timeout'])}s"
    attempts = int((config.get("retries") or {}).get("max_attempts", 5))  # botocore's default: 5 attempts
    retry = {"max_retries": max(0, attempts - 1), "retry_timeout": timedelta(seconds=30),
             "backoff": {"init_backoff": timedelta(seconds=0.1), "max_backoff": timedelta(seconds=2), "base": 2.0}}
    return ObstoreReads(dict(bucket=bucket, prefix=prefix or None, client_options=client_options,
                             retry_config=retry, **kwargs))


class ObstoreReads:
    """Concurrent ranged GETs of keys under one prefix; each result a zero-copy buffer, None if missing.

    The client is made on first use in each process: a client's connections and runtime threads do not
    survive a fork (uvicorn and Dask workers fork after the store is opened).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._client: tuple[int, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_client": None}  # another process makes its own client

    @property
    def store(self) -> Any:
        if self._client is None or self._client[0] != os.getpid():
            from obstore.store import S3Store

            self._client = (os.getpid(), S3Store(**self.config))
        return self._client[1]

    async def get_many(self, requests: list[tuple[str, Any]]) -> list[memoryview | None]:
        """``requests`` are (key, range) with range (start, stop), ("suffix", n) or None (all of it)."""
        import obstore
        from obstore.exceptions import NotFoundError

        gate = asyncio.Semaphore(MAX_CONCURRENT_GETS)
        store = self.store

        async def one(key: str, rng: Any) -> memoryview | None:
            async with gate:
                try:
                    if rng is None:
                        return memoryview(await (await obstore.get_async(store, key)).bytes_async())
                    if rng[0] == "suffix":
                        result = await obstore.get_async(store, key, options={"range": {"suffix": rng[1]}})
                        return memoryview(await result.bytes_async())
                    return memoryview(await obstore.get_range_async(store, key, start=rng[0], end=rng[1]))
                except (FileNotFoundError, NotFoundError):
                    return None
                except Exception as exc:
                    raise _translated(exc) from exc

        return list(await asyncio.gather(*(one(k, r) for k, r in requests)))


def _translated(exc: Exception) -> Exception:
    """obstore reports a refused or timed-out connection as a GenericError: make it a ConnectionError, so
    ``_common.remote_errors`` turns it into StorageUnavailable like the s3fs path's errors."""
    text = str(exc).lower()
    if any(m in text for m in ("error sending request", "connection", "timed out", "timeout", "connect")):
        return ConnectionError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return exc
