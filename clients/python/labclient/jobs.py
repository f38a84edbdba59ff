"""Batch jobs from the client: submit, follow with a progress bar, fetch results, cancel.

>>> job = submit_job(lab, {"kind": "cutout", "dataset": "isotropic64", "variable": "velocity",
...                        "time": 0.0, "x": "0:64", "format": "zarr"})
>>> # "time" and "format" as in GET .../cutout; "times" and "formats" take lists (one spelling per request)
>>> ds = job.wait(progress=True).result()        # an xarray Dataset, opened lazily from zarr
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from labclient.errors import ConnectionFailed, LabClientError
from labclient.transport import _detail

if TYPE_CHECKING:
    from labclient.lab import Lab

JOBS = "/api/v1/jobs"
FINAL = ("done", "failed", "cancelled", "expired")


class JobFailed(LabClientError):
    """The job ended without results (failed, cancelled or expired); ``detail`` is the server's error text."""


def _raise_for(response: Any) -> None:
    if response.status_code >= 400:
        from labclient.errors import error_for_status

        detail, code = _detail(response)
        raise error_for_status(response.status_code, detail, code)


def submit_job(lab: Lab, request: dict[str, Any], points: Any = None) -> Job:
    """POST a job. ``points`` (an (N, 3) array) travels as a raw msgpack array.

    A submission is sent again only when it never reached the server or the server answered 503 (busy:
    nothing was started); a lost answer is not retried (that could start the job twice), and a quota
    error (429) is raised at once rather than waited out.
    """
    body = dict(request)
    if points is not None:
        body["points"] = np.ascontiguousarray(points, dtype=np.float64)
    response = lab.transport.request("POST", JOBS, body=body, binary=False, idempotent=False, busy=(503,))
    return Job(lab, response.json()["id"])


def list_jobs(lab: Lab, shared: bool = False) -> list[Job]:
    """The caller's jobs, newest first; ``shared`` adds those shared with the caller's groups."""
    params = {"shared": "true"} if shared else None
    return [Job(lab, j["id"], j) for j in lab.transport.call("GET", JOBS, binary=False, params=params)["jobs"]]


class Job:
    """A batch job on the server.

    Parameters
    ----------
    lab
        The connection.
    job_id
        The job's id.
    info
        Its last known status (fetched when needed).
    """

    def __init__(self, lab: Lab, job_id: str, info: dict[str, Any] | None = None) -> None:
        self.lab = lab
        self.id = job_id
        self.info = info or {}

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.info.get('kind', '?')} {self.info.get('status', '?')}>"

    # -- state -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Fetch and return the job's status: status, progress, files, error, expiry."""
        self.info = self.lab.transport.call("GET", f"{JOBS}/{self.id}", binary=False)
        return self.info

    @property
    def state(self) -> str:
        return str(self.info.get("status") or self.status()["status"])

    def wait(self, progress: bool = True, timeout: float | None = None, poll: float = 0.5) -> Job:
        """Block until the job ends; show a tqdm bar fed by the server's progress.

        Raises
        ------
        JobFailed
            When it ends failed, cancelled or expired.
        TimeoutError
            After ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                info = self.status()
                p = info["progress"]
                if progress and bar is None and p["total"]:
                    bar = _bar(p["total"], f"job {self.id}")
                if bar is not None:
                    bar.update(p["done"] - bar.n)
                if info["status"] in FINAL:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {info['status']} after {timeout} s")
                time.sleep(poll)
        finally:
            if bar is not None:
                bar.close()
        if info["status"] != "done":
            raise JobFailed(f"job {self.id} {info['status']}: {info.get('error') or 'no reason given'}")
        return self

    def cancel(self) -> dict[str, Any]:
        """Cancel the job (or delete a finished job's files)."""
        self.info = self.lab.transport.call("DELETE", f"{JOBS}/{self.id}", binary=False)
        return self.info

    def share(self, group: str) -> list[str]:
        """Share this job read-only with one of your groups; returns the groups it is shared with."""
        from urllib.parse import quote

        path = f"{JOBS}/{self.id}/shares/{quote(group, safe='')}"
        return self.lab.transport.call("PUT", path, binary=False)["shared_with"]

    def unshare(self, group: str) -> list[str]:
        """Stop sharing this job with a group (at once)."""
        from urllib.parse import quote

        path = f"{JOBS}/{self.id}/shares/{quote(group, safe='')}"
        return self.lab.transport.call("DELETE", path, binary=False)["shared_with"]

    def link(self, hours: float = 24) -> dict[str, Any]:
        """A URL that downloads this job's files without a token for ``hours``: ``{"id", "url", "expires"}``.
        ``lab.revoke_link(link["id"])`` ends it early."""
        return self.lab.transport.call(
            "POST", f"{JOBS}/{self.id}/links", body={"expires_in_hours": hours}, binary=False, idempotent=False
        )

    def files(self) -> list[dict[str, Any]]:
        """Result files with name, size, sha256 and format."""
        info = self.info if self.info.get("status") == "done" else self.status()
        return list(info.get("files", []))

    # -- results -----------------------------------------------------------------------------------
    def download(self, path: str | os.PathLike[str], name: str | None = None) -> Path:
        """Download every result (or the one called ``name``) into the folder ``path``, checking sha256.

        A zarr result is fetched object by object into ``path/<name>``. Returns the folder (or the file).
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        chosen = [f for f in self.files() if name is None or f["name"] == name]
        if not chosen:
            raise LabClientError(f"job {self.id} has no file {name!r}")
        for f in chosen:
            if f.get("format") == "zarr":
                manifest = _json(self._fetch_bytes("manifest.json"))
                for obj in manifest["objects"]:
                    self._fetch_file(obj["name"], folder / obj["name"], obj["sha256"])
            else:
                self._fetch_file(f["name"], folder / f["name"], f["sha256"])
        return folder / chosen[0]["name"] if name is not None else folder

    def result(self, path: str | os.PathLike[str] | None = None) -> Any:
        """The result: an xarray Dataset for cutouts (lazily opened zarr, else NetCDF), an ndarray otherwise.

        Files are downloaded to ``path`` (a temporary folder by default) first.
        """
        files = {f["format"]: f for f in self.files()}
        folder = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix=f"labjob-{self.id}-"))
        if "zarr" in files or "netcdf" in files:
            from labclient._extras import require

            xr = require("xarray", "job results as xarray", "fetch the files with job.download(folder)")
        if "zarr" in files:
            return xr.open_zarr(self.download(folder, files["zarr"]["name"]), consolidated=True)
        if "netcdf" in files:
            return xr.open_dataset(self.download(folder, files["netcdf"]["name"]))
        if "npy" in files:
            return np.load(self.download(folder, files["npy"]["name"]))
        if "hdf5" in files:
            return self.download(folder)
        raise LabClientError(f"job {self.id} has no result files")

    def _fetch_bytes(self, name: str) -> bytes:
        return self.lab.transport.request("GET", f"{JOBS}/{self.id}/files/{name}", binary=False).content

    def _fetch_file(self, name: str, dest: Path, sha256: str) -> None:
        """Stream one file to ``dest`` through ``dest.part``; after a broken connection ask only for the
        rest (HTTP Range, under the client's retry policy), then check the sha256 the job lists."""
        if dest.exists() and _sha256(dest) == sha256:
            return  # already here from an earlier download
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        transport = self.lab.transport
        path = f"{JOBS}/{self.id}/files/{name}"

        def attempt() -> Any:
            have = tmp.stat().st_size if tmp.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            with transport.client.stream("GET", path, headers=headers) as response:
                if response.status_code == 416 and have:  # the part is not a prefix of this file: start over
                    tmp.unlink()
                    return attempt()
                if response.status_code >= 400:
                    response.read()
                    return response
                # 206 continues the part; 200 means the server sent the whole file again
                with open(tmp, "ab" if response.status_code == 206 else "wb") as out:
                    for block in response.iter_bytes():  # as received: a break keeps all that arrived
                        out.write(block)
            return response

        try:
            response = transport.policy.call(attempt, idempotent=True)
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"downloading {name} of job {self.id} failed after up to {transport.policy.retries + 1} "
                f"attempts ({exc!r}); the part is kept in {tmp}: call download() again to resume"
            ) from exc
        _raise_for(response)
        if _sha256(tmp) != sha256:
            tmp.unlink()
            raise LabClientError(f"{name} of job {self.id} arrived damaged (sha256 mismatch); download again")
        os.replace(tmp, dest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _json(data: bytes) -> Any:
    import json

    return json.loads(data)


def _bar(total: int, desc: str) -> Any:
    from labclient.batching import tqdm_class

    bar = tqdm_class()
    return None if bar is None else bar(total=total, unit="task", desc=desc)
