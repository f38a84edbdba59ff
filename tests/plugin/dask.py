"""A real Dask cluster in separate processes: ``dask scheduler`` and workers on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labservice.devserver import free_ports

DASK = str(Path(sys.executable).parent / "dask")


class DaskProcesses:
    """``dask scheduler`` plus worker processes on 127.0.0.1 (workers without nannies, so a kill is final)."""

    def __init__(self, workdir: Path, n_workers: int = 2) -> None:
        self.workdir = workdir
        self.port = free_ports(1)[0]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.logs: list[Path] = []
        self.scheduler = self._spawn(
            "scheduler",
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
        )
        self.workers = [self.add_worker() for _ in range(n_workers)]

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            return subprocess.Popen(
                cmd,
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=os.environ | {"PYTHONWARNINGS": "ignore"},
            )

    def add_worker(self) -> subprocess.Popen:
        return self._spawn(
            "worker",
            [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
             "--no-dashboard", "--memory-limit", "1GiB"],
        )  # fmt: skip

    def wait_workers(self, n: int, timeout: float = 90.0) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=timeout)

    def stop(self) -> None:
        # Workers first, then the scheduler: a worker told to close by SIGTERM and by a closing scheduler
        # at once can hang in its shutdown (seen: 20 s until the kill below).
        for group in (self.workers, [self.scheduler]):
            for p in group:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            for p in group:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    """A real ``dask scheduler`` and 2 ``dask worker`` processes on 127.0.0.1."""
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"))
    try:
        procs.wait_workers(2)
        yield procs
    finally:
        procs.stop()
