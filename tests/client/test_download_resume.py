"""Job downloads resume with HTTP Range after a broken connection and check the sha256 the job lists.

The file is a real cutout file from the real server; a small real server in front of it plays the job
routes and cuts the connection mid-body on the first download, as a dropped link would.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from starlette.responses import JSONResponse, Response, StreamingResponse

from labclient import Lab
from labclient.errors import LabClientError
from labclient.jobs import Job


@pytest.fixture
def real_file(server, big_token, tmp_path: Path) -> bytes:
    with Lab(server.url, token=big_token) as lab:
        path = lab.dataset("periodic16").download_cutout(str(tmp_path / "cut.h5"), "velocity", 0.1)
    data = Path(path).read_bytes()
    assert len(data) > 40_000
    return data


def _job_routes(counting, data: bytes, sha256: str, cut_first: bool = True) -> None:
    async def status(request, hit):
        files = [{"name": "cut.h5", "size": len(data), "sha256": sha256, "format": "hdf5"}]
        return JSONResponse(
            {"id": "J", "status": "done", "files": files, "progress": {"done": 1, "total": 1}}
        )

    async def file(request, hit):
        wanted = request.headers.get("range")
        if wanted is None:
            if cut_first and hit == 1:

                async def half_then_break():
                    yield data[: len(data) // 2]
                    raise ConnectionResetError("link dropped")  # uvicorn closes the connection mid-body

                return StreamingResponse(half_then_break(), headers={"Content-Length": str(len(data))})
            return Response(data)
        start = int(wanted.removeprefix("bytes=").split("-")[0])
        rest = data[start:]
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        return Response(rest, status_code=206, headers=headers)

    counting.route("/api/v1/jobs/J", "status", status)
    counting.route("/api/v1/jobs/J/files/cut.h5", "file", file)


def test_download_resumes_with_range_and_checks_sha256(counting, real_file: bytes, tmp_path: Path) -> None:
    digest = hashlib.sha256(real_file).hexdigest()
    _job_routes(counting, real_file, digest)
    counting.start()
    with Lab(counting.url, backoff=0.01) as lab:
        folder = Job(lab, "J").download(tmp_path / "out")
    got = (folder / "cut.h5").read_bytes()
    assert hashlib.sha256(got).hexdigest() == digest
    ranges = [h.get("range") for h in counting.hits["file"]]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(real_file) // 2  # only the rest was asked for
    assert not (folder / "cut.h5.part").exists()


def test_a_damaged_download_is_refused(counting, real_file: bytes, tmp_path: Path) -> None:
    _job_routes(counting, real_file, "0" * 64, cut_first=False)
    counting.start()
    with Lab(counting.url, backoff=0.01) as lab, pytest.raises(LabClientError, match="sha256 mismatch"):
        Job(lab, "J").download(tmp_path / "out")
    assert not (tmp_path / "out" / "cut.h5").exists()
