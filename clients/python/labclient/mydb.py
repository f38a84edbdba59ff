"""MyDB from the client: your tables kept on the server, shared read-only with your groups, queried with SQL.

>>> sim = lab.dataset("cosmo64")
>>> sim.sql("SELECT id, mass, x, y, z FROM halos WHERE snap = 30 AND mass > 1e13", into="massive")
>>> lab.mydb.share("massive", "lensing")                 # a colleague in "lensing" reads alice.massive
>>> lab.mydb.upload(sensors_df, "sensors")               # a DataFrame, or a .csv / .parquet file
>>> lab.mydb.sql("SELECT * FROM mydb.massive m JOIN cosmo64.halos h USING (id)")
>>> lab.mydb.table("alice.massive")                      # a DataFrame

Names: yours are ``NAME`` or ``mydb.NAME``; one shared with you is ``OWNER.NAME``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labclient.cosmology import _frame
from labclient.errors import InvalidRequest

if TYPE_CHECKING:
    import pandas as pd

    from labclient.jobs import Job
    from labclient.lab import Lab

TABLES = "/api/v1/mydb/tables"
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".parquet": "application/vnd.apache.parquet",
    ".pq": "application/vnd.apache.parquet",
}


def _path(name: str) -> str:
    return f"{TABLES}/{quote(str(name), safe='.')}"


class MyDB:
    """Your MyDB on one server; get it as ``lab.mydb``."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def __repr__(self) -> str:
        return f"<MyDB on {self.lab.url}>"

    def tables(self, shared: bool | None = None) -> list[dict[str, Any]]:
        """Your tables and those shared with you (``shared=True``: only those; ``False``: only yours).

        Each is ``{name, ref, owner, shared, groups, rows, bytes, columns, created}``; ``ref`` is what SQL calls it.
        """
        params = None if shared is None else {"shared": "true" if shared else "false"}
        return self.lab.transport.call("GET", TABLES, params=params, binary=False)["tables"]

    def usage(self) -> dict[str, int]:
        """``{used_bytes, quota_bytes, tables}`` of your MyDB."""
        return self.lab.transport.call("GET", TABLES, binary=False)["usage"]

    def info(self, name: str) -> dict[str, Any]:
        """One table's schema, rows and size."""
        return self.lab.transport.call("GET", _path(name), binary=False)

    def table(self, name: str, limit: int | None = None, offset: int = 0) -> pd.DataFrame:
        """A table's rows as a DataFrame (``limit`` rows from ``offset``; all by default)."""
        params: dict[str, Any] = {"format": "msgpack", "offset": offset}
        if limit is not None:
            params["limit"] = limit
        return _frame(self.lab.transport.call("GET", _path(name), params=params))

    def download(self, name: str, path: str | Path) -> Path:
        """Save a table as a file; the format follows the suffix (.parquet, .csv or .json)."""
        path = Path(path)
        fmt = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json"}.get(
            path.suffix.lower()
        )
        if fmt is None:
            raise InvalidRequest(f"cannot tell the format from {path.name!r}: use .parquet, .csv or .json")
        response = self.lab.transport.request("GET", _path(name), params={"format": fmt}, binary=False)
        path.write_bytes(response.content)
        return path

    def upload(self, data: Any, name: str) -> dict[str, Any]:
        """Save a DataFrame, or a .csv / .parquet file, as your table ``name`` (replacing one of that name).

        A DataFrame travels as Parquet when pyarrow is installed (types kept), else as CSV.
        """
        if isinstance(data, (str, Path)):
            path = Path(data)
            ctype = CONTENT_TYPES.get(path.suffix.lower())
            if ctype is None:
                raise InvalidRequest(f"upload a .csv or .parquet file, not {path.name!r}")
            content = path.read_bytes()
        elif hasattr(data, "to_csv"):
            content, ctype = _dataframe_bytes(data)
        else:
            raise InvalidRequest(f"upload takes a DataFrame or a file path, not {type(data).__name__}")
        return _send_raw(self.lab.transport, "PUT", _path(name), content, ctype).json()

    def drop(self, name: str) -> dict[str, Any]:
        """Drop one of your tables (and its shares)."""
        return self.lab.transport.call("DELETE", _path(name), binary=False)

    def share(self, name: str, group: str) -> dict[str, Any]:
        """Share your table read-only with one of your groups."""
        return self.lab.transport.call("PUT", f"{_path(name)}/shares/{quote(group, safe='')}", binary=False)

    def unshare(self, name: str, group: str) -> dict[str, Any]:
        """Stop sharing your table with a group (at once)."""
        return self.lab.transport.call(
            "DELETE", f"{_path(name)}/shares/{quote(group, safe='')}", binary=False
        )

    def sql(
        self,
        query: str,
        into: str | None = None,
        truncate: bool = False,
        job: bool = False,
        format: str = "parquet",
    ) -> Any:
        """Read-only SQL over ``mydb.NAME`` (yours), ``OWNER.NAME`` (shared with you) and ``SIM.halos`` /
        ``SIM.trees`` / ``SIM.snapshots``.

        Returns a DataFrame; with ``into`` the result is saved as your table instead and its description
        returned. ``job=True`` submits it as a batch job of kind ``sql`` (no row cap) and returns the
        :class:`~labclient.jobs.Job` (``format`` is its file's format: parquet, csv or hdf5).
        """
        if job:
            return self.submit(query, into=into, format=format)
        body: dict[str, Any] = {"sql": query}
        if into is not None:
            body["into"] = into
            return self.lab.transport.call(
                "POST", "/api/v1/mydb/sql", body=body, binary=False, idempotent=True
            )
        params = {"format": "msgpack", "truncate": "true" if truncate else "false"}
        payload = self.lab.transport.call(
            "POST", "/api/v1/mydb/sql", body=body, params=params, idempotent=True
        )
        frame = _frame(payload)
        frame.attrs["truncated"] = bool(payload.get("truncated", False))
        return frame

    def submit(
        self, query: str, sim: str | None = None, into: str | None = None, format: str = "parquet"
    ) -> Job:
        """Submit a query as a job of kind ``sql``; with ``sim`` it sees that simulation's halos, trees and
        snapshots as ``POST /datasets/{sim}/sql`` does."""
        from labclient.jobs import submit_job

        request: dict[str, Any] = {"kind": "sql", "sql": query, "format": format}
        if sim is not None:
            request["sim"] = sim
        if into is not None:
            request["into"] = into
        return submit_job(self.lab, request)


def _send_raw(transport: Any, method: str, path: str, content: bytes, ctype: str) -> Any:
    """A request with a raw body (a file upload) under the transport's retry policy (a PUT is safe to repeat)."""
    import httpx

    from labclient.jobs import _raise_for
    from labclient.transport import failure

    def send() -> httpx.Response:
        return transport.client.request(
            method, path, content=content, headers={"Content-Type": ctype, "Accept": "application/json"}
        )

    try:
        response = transport.policy.call(send, idempotent=True)
    except httpx.TransportError as exc:
        raise failure(
            method, f"{transport.url}{path}", exc, transport.timeout, True, transport.policy.retries + 1
        ) from exc
    _raise_for(response)
    return response


def _dataframe_bytes(frame: Any) -> tuple[bytes, str]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return frame.to_csv(index=False).encode(), "text/csv"
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
    return buf.getvalue(), CONTENT_TYPES[".parquet"]
