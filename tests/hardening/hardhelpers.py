"""Helpers of the hardening suite: a bigger dataset, a restartable SeaweedFS, a server subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from labservice.devserver import free_ports
from labservice.storage import create_store
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable

TWO_PI = 2 * np.pi


def build_box(
    url: str, n: int, nt: int = 1, chunk: int = 32, shard: int = 64, storage_options: Any = None
) -> DatasetMeta:
    """A periodic n^3 box with an analytic velocity (3) at nt times: u = (sin y, sin z, sin x) * (1 + t)."""
    axis = Axis(size=n, periodic=True, start=0.0, step=TWO_PI / n)
    meta = DatasetMeta(
        id=Path(url).name.removesuffix(".zarr"),
        title=f"hardening box {n}^3",
        grid=Grid(x=axis, y=axis, z=axis),
        times=[float(t) for t in range(nt)],
        variables={"velocity": Variable(components=["ux", "uy", "uz"], units="m/s")},
        chunks=(chunk, chunk, chunk),
        shards=(shard, shard, shard),
    )
    store = create_store(url, meta, backend="zarr", storage_options=storage_options, overwrite=True)
    c = axis.coords()
    for t in range(nt):
        for z0 in range(0, n, shard):
            z, y, x = np.meshgrid(c[z0 : z0 + shard], c, c, indexing="ij")
            u = np.stack([np.sin(y), np.sin(z), np.sin(x)], axis=-1) * (1.0 + t)
            store.write_box("velocity", t, z0, 0, 0, u.astype(np.float32))
    store.close()
    return meta


def analytic_velocity(points: np.ndarray, t: float) -> np.ndarray:
    x, y, z = points.T
    return np.stack([np.sin(y), np.sin(z), np.sin(x)], axis=-1) * (1.0 + t)


class Weed:
    """A SeaweedFS server with S3 on fixed ports, so that it can be stopped and started again on its data."""

    KEY, SECRET = "labservice", "labservice-secret"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.ports = free_ports(9)
        self.endpoint = f"http://127.0.0.1:{self.ports[3]}"
        self.proc: subprocess.Popen | None = None

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "key": self.KEY,
            "secret": self.SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            # Fail fast while the store is down: one attempt, short timeouts.
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10},
        }

    def start(self, bucket: str = "hard", timeout: float = 90.0) -> None:
        master, volume, filer, s3, gm, gv, gf, gs3, metrics = self.ports
        binary = str(Path(sys.executable).parent / "weed")
        cmd = [
            binary if Path(binary).exists() else (shutil.which("weed") or "weed"),
            "server", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={gm}", f"-volume.port={volume}",
            f"-volume.port.grpc={gv}", f"-filer.port={filer}", f"-filer.port.grpc={gf}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={gs3}", f"-metricsPort={metrics}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=20", "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip
        log = open(self.workdir / "weed.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        self.wait_ready(bucket, timeout)

    def wait_ready(self, bucket: str, timeout: float) -> None:
        import s3fs

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (
                self.workdir / "weed.log"
            ).read_text()[-3000:]
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
        raise RuntimeError(f"SeaweedFS did not come up in {timeout} s: {last!r}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


class ServeProcess:
    """``python -m labservice serve`` as a subprocess in its own process group (so its Dask workers too)."""

    def __init__(self, data: Path, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "labservice", "serve", "--port", str(self.port), "--data", str(data)]
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(
                cmd,
                stdout=f,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the server did not start in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server, then end what is left of its process group (its Dask cluster)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
