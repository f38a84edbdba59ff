"""A throwaway server for tests, benchmarks and notebooks: uvicorn in a thread on a free loopback port.

>>> with ServerThread(create_app(settings)) as server:
...     Lab(server.url).datasets()

Also writes small analytic sample datasets (:func:`write_sample_datasets`) so a server can be tried
without the demo data, and runs ``labservice serve`` as a separate process (:class:`ServeProcess`), as
the load benchmark, the notebooks runner and the fault tests need, and a ``redis-server`` for shared limits
(:class:`RedisServer`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

START_TIMEOUT = 60.0


class ServerThread:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a daemon thread, on a port chosen by the OS."""

    def __init__(self, app: Any, host: str = "127.0.0.1", log_level: str = "warning") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        # X-Forwarded-For is the limits middleware's (settings.trusted_proxies), as in `labservice serve`.
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False, proxy_headers=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="labservice-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        """Start serving; return once the app's lifespan has finished starting."""
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            problem = None
            if not self.thread.is_alive():
                problem = "the server thread stopped while starting (see the log above)"
            elif time.monotonic() > deadline:
                problem = f"the server did not start within {START_TIMEOUT} s"
            if problem:
                self.stop()
                raise RuntimeError(problem)
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- sample data -----------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports, for servers started as separate processes.

    All sockets stay open until every port is chosen, so no port is handed out twice.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServeProcess:
    """``python -m labservice serve`` on a free loopback port, in its own process group (so that stopping
    it also ends the Dask workers it started). Output goes to ``log``; ``env`` adds to the environment."""

    def __init__(
        self,
        data: Path | None,
        env: Mapping[str, str],
        log: Path,
        port: int | None = None,
        workers: int = 1,
        args: list[str] | None = None,
    ) -> None:
        self.port = port or free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        self.workers = workers
        cmd = [sys.executable, "-m", "labservice", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if data is not None:
            cmd += ["--data", str(data)]
        if workers != 1:
            cmd += ["--workers", str(workers)]
        cmd += list(args or [])
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as f:  # the child keeps its own handle
            self.proc = subprocess.Popen(
                cmd,
                stdout=f,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def started_workers(self) -> int:
        """How many server processes have finished starting so far (uvicorn logs one line each)."""
        if not self.log.exists():
            return 0
        with open(self.log, "rb") as f:
            f.seek(self._log_start)
            return f.read().count(b"Application startup complete")

    def worker_pids(self) -> list[int]:
        """The pids of the worker processes under uvicorn's supervisor (itself when there is one worker)."""
        import psutil

        if self.workers == 1:
            return [self.pid]
        pids = []
        for child in psutil.Process(self.pid).children():
            try:  # a worker just killed is a zombie until the supervisor reaps it: not a worker any more
                if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                    pids.append(child.pid)
            except psutil.Error:
                continue
        return sorted(pids)

    def wait_ready(self, timeout: float = 120.0, jobs: bool = False) -> ServeProcess:
        """Wait until /health answers 200 (and, with ``jobs``, reports the job cluster reachable) and every
        worker process has started."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"labservice serve exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/api/v1/health", timeout=5)
                ready = r.status_code == 200 and (not jobs or r.json().get("jobs", {}).get("reachable"))
                if ready and self.started_workers() >= self.workers:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"labservice serve did not become ready in {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Signal the server, then end what is left of its process group (its Dask cluster)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 60.0) -> None:
        """A graceful stop (SIGTERM), then whatever is left is killed."""
        self.kill(signal.SIGTERM, timeout)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


REDIS_START_TIMEOUT = 20.0


class RedisServer:
    """One redis-server process (no persistence), restartable on the same port."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or free_ports(1)[0]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.folder), "--daemonize", "no", "--logfile", str(self.folder / "redis.log"),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}):\n{log}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {REDIS_START_TIMEOUT} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (its data is gone: it keeps nothing on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flush(self) -> None:
        """Forget every key (fresh buckets between tests)."""
        import redis

        with redis.Redis.from_url(self.url) as client:
            client.flushall()


def _periodic_field(x: np.ndarray, y: np.ndarray, z: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Taylor-Green-like velocity and a pressure on a 2*pi box, growing linearly in time."""
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    s = 1.0 + t
    u = np.stack([np.sin(yy) * np.cos(zz), np.sin(zz) * np.cos(xx), np.sin(xx) * np.cos(yy)], axis=-1) * s
    p = (np.cos(xx) + np.cos(yy) + np.cos(zz))[..., None] * s
    return u.astype(np.float32), p.astype(np.float32)


def write_sample_datasets(folder: str | Path, n: int = 16) -> dict[str, str]:
    """Write two small analytic datasets under ``folder``; return id -> URL.

    - ``periodic<n>``: an n^3 periodic 2*pi box, 5 times, ``velocity`` (3) and ``pressure`` (1);
    - ``wall<n>``: x and z periodic, y a stretched wall-bounded axis of 6 nodes in [-1, 1], 3 times,
      ``velocity`` = (1 - y^2, 0, 0) * (1 + t). Its y axis is too short for 8-point stencils.
    """
    from labservice.storage import Axis, DatasetMeta, Grid, Variable, create_store

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h = 2 * np.pi / n
    box = Grid(
        x=Axis(size=n, periodic=True, start=0.0, step=h),
        y=Axis(size=n, periodic=True, start=0.0, step=h),
        z=Axis(size=n, periodic=True, start=0.0, step=h),
    )
    half = n // 2
    periodic = DatasetMeta(
        id=f"periodic{n}",
        title=f"Analytic periodic box {n}^3",
        grid=box,
        times=[0.0, 0.1, 0.2, 0.3, 0.4],
        variables={
            "velocity": Variable(components=["ux", "uy", "uz"], units="m/s"),
            "pressure": Variable(components=["p"], units="Pa"),
        },
        chunks=(half, half, half),
        shards=(n, n, n),
    )
    urls = {periodic.id: str(folder / f"{periodic.id}.zarr")}
    store = create_store(urls[periodic.id], periodic, overwrite=True)
    coords = [box.axis(a).coords() for a in ("x", "y", "z")]
    for t_index, t in enumerate(periodic.times):
        u, p = _periodic_field(*coords, t)
        store.write_box("velocity", t_index, 0, 0, 0, u)
        store.write_box("pressure", t_index, 0, 0, 0, p)

    ycoords = (-np.cos(np.linspace(0.0, np.pi, 6))).round(12).tolist()
    wall = DatasetMeta(
        id=f"wall{n}",
        title="Analytic wall-bounded flow",
        grid=Grid(
            x=Axis(size=half, periodic=True, start=0.0, step=2 * np.pi / half),
            y=Axis(size=6, periodic=False, coordinates=ycoords),
            z=Axis(size=half, periodic=True, start=0.0, step=2 * np.pi / half),
        ),
        times=[0.0, 0.5, 1.0],
        variables={"velocity": Variable(components=["ux", "uy", "uz"], units="m/s")},
        chunks=(half, 6, half),
        shards=(half, 6, half),
    )
    urls[wall.id] = str(folder / f"{wall.id}.zarr")
    store = create_store(urls[wall.id], wall, overwrite=True)
    y = np.asarray(ycoords)
    for t_index, t in enumerate(wall.times):
        u = np.zeros((half, 6, half, 3), dtype=np.float32)
        u[..., 0] = ((1.0 - y**2) * (1.0 + t))[None, :, None]
        store.write_box("velocity", t_index, 0, 0, 0, u)
    return urls
