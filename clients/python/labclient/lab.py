"""The entry point: ``Lab(url, token)`` connects to a labservice server."""

from __future__ import annotations

import os
from typing import Any

from labclient.cosmology import RemoteSimulation
from labclient.dataset import RemoteDataset
from labclient.transport import Transport

DEFAULT_URL = "http://127.0.0.1:8000"


class Lab:
    """A connection to a labservice server.

    Parameters
    ----------
    url
        Server address; default ``$LABSERVICE_URL`` or http://127.0.0.1:8000.
    token
        Bearer token; default ``$LABSERVICE_TOKEN``, or public access when unset.
    max_concurrency
        Requests in flight at once when a large query is split (also capped by the caller's limit).
    progress_threshold
        Show a progress bar automatically for queries with at least this many points.
    timeout, retries, backoff
        Passed to the HTTP transport: response timeout (s), retries of transient failures, first wait (s).
    """

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
        self.transport = Transport(
            self.url,
            token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            pool_size=max(16, self.max_concurrency),
        )

    def __repr__(self) -> str:
        return f"<Lab {self.url}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def health(self) -> dict[str, Any]:
        """The server's liveness report."""
        return self.transport.call("GET", "/api/v1/health", binary=False)

    def datasets(self) -> list[dict[str, Any]]:
        """Every dataset served: id, title, kind, grid summary."""
        return self.transport.call("GET", "/api/v1/datasets", binary=False)["datasets"]

    def jobs(self, shared: bool = False) -> list[Any]:
        """This caller's batch jobs, newest first (:class:`labclient.jobs.Job` objects); ``shared=True``
        adds the jobs shared with your groups (read-only: ``job.info["shared"]`` is True)."""
        from labclient.jobs import list_jobs

        return list_jobs(self, shared=shared)

    def me(self) -> dict[str, Any]:
        """Who you are: user, token scopes, groups with roles, limits and usage (MyDB and scratch bytes,
        running jobs, links)."""
        from labclient.collab import me

        return me(self)

    @property
    def mydb(self) -> Any:
        """Your MyDB: ``lab.mydb.tables()``, ``.upload(df, name)``, ``.table(name)``, ``.sql(query, into=)``,
        ``.share(name, group)`` (:class:`labclient.mydb.MyDB`)."""
        from labclient.mydb import MyDB

        return MyDB(self)

    @property
    def groups(self) -> Any:
        """Your groups: ``lab.groups.create(name)``, ``.add(group, user, role)``, ``.remove(group, user)``,
        ``.list()``, ``.get(name)``, ``.delete(name)`` (:class:`labclient.collab.Groups`)."""
        from labclient.collab import Groups

        return Groups(self)

    def links(self) -> list[dict[str, Any]]:
        """Your download links (``job.link(hours)`` makes one)."""
        from labclient.collab import links

        return links(self)

    def revoke_link(self, link_id: str) -> dict[str, Any]:
        """Revoke one of your links at once."""
        from labclient.collab import revoke_link

        return revoke_link(self, link_id)

    def dataset(self, dataset_id: str) -> RemoteDataset | RemoteSimulation:
        """Open one dataset by id (fetches its metadata and this caller's limits).

        Field datasets give a :class:`RemoteDataset`; cosmology simulations a :class:`RemoteSimulation`.
        """
        info = self.transport.call("GET", f"/api/v1/datasets/{dataset_id}", binary=False)
        if info.get("kind") == "cosmology":
            return RemoteSimulation(self, info)
        return RemoteDataset(self, info)
