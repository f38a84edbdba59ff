"""Load, fast version: the benchmark's client mix (benchmarks/load.py) for a few seconds, and a slow reader.

The long run (50 clients x 120 s, server in its own process) is ``python benchmarks/load.py``.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import psutil
import pytest

from benchmarks import load
from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore
from tests.plugin.grids import build_box

pytestmark = [pytest.mark.slow, pytest.mark.dask]

MIB = 1 << 20
CLIENTS, SECONDS = 10, 10.0


def test_mixed_load_has_no_errors_and_flat_memory(server: ServerThread, settings: Settings) -> None:
    tokens = load.make_tokens(settings.token_db_path(), CLIENTS)
    load.run_load(server.url, tokens[:2], 3.0)  # compile the numba kernels, import matplotlib
    before = psutil.Process().memory_info().rss
    result = load.run_load(server.url, tokens, SECONDS)
    assert result["errors"] == 0, result["error_samples"]
    ops = result["operations"]
    for op in ("points", "cutout", "metadata", "halos", "job_submit"):
        assert ops.get(op, {}).get("count", 0) > 0, (op, ops)
    assert result["throughput_rps"] > 2
    # This test process holds the server: its memory may grow by the chunk cache (bounded) and little more.
    bound = (settings.cache_bytes + 192 * MIB) / MIB
    assert result["rss_mb"]["max"] - before / MIB < bound, (before / MIB, result["rss_mb"])


# -- a slow reader ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, str]]:
    """A server with a 128^3 x 3 box (a 24 MiB cutout) and a token allowed to read it in one go."""
    folder = tmp_path_factory.mktemp("big")
    build_box(str(folder / "big128.zarr"), n=128, nt=1)
    settings = Settings(
        datasets={"big128": str(folder / "big128.zarr")},
        token_db=folder / "tokens.sqlite",
        public_requests_per_minute=1_000_000,
        public_max_concurrent=64,
    )
    _, token = TokenStore(folder / "tokens.sqlite").create(
        "slow", Limits(max_cutout_bytes=64 * MIB, requests_per_minute=1_000_000, max_concurrent=8)
    )
    with ServerThread(create_app(settings)) as server:
        yield server, token


class SlowReader(threading.Thread):
    """Reads a whole-box cutout at about 1 MB/s through a small receive buffer, until told to stop."""

    def __init__(self, server: ServerThread, token: str, rate: float = 1e6) -> None:
        super().__init__(daemon=True)
        self.server, self.token, self.rate = server, token, rate
        self.received = 0
        self.status_line = b""
        self.stop = threading.Event()

    def run(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)  # before connect, so it sticks
        sock.connect((self.server.host, self.server.port))
        request = (
            "GET /api/v1/datasets/big128/cutout?variable=velocity&time=0&format=npy HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(request.encode())
        start = time.monotonic()
        try:
            while not self.stop.is_set():
                data = sock.recv(16 << 10)
                if not data:
                    break
                if not self.status_line:
                    self.status_line = data.split(b"\r\n", 1)[0]
                self.received += len(data)
                ahead = self.received / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            sock.close()


def _latencies(http: httpx.Client, n: int) -> list[float]:
    body = {"variable": "velocity", "time": 0.0, "points": np.full((50, 3), 1.0).tolist()}
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        r = http.post("/api/v1/datasets/big128/points", json=body) if i % 2 else http.get("/api/v1/datasets")
        assert r.status_code == 200, r.text
        out.append(time.perf_counter() - t0)
    return out


def test_slow_reader_does_not_block_others(big_server: tuple[ServerThread, str]) -> None:
    server, token = big_server
    total = 128**3 * 3 * 4
    with httpx.Client(base_url=server.url, timeout=60) as http:
        baseline = _latencies(http, 10)
        reader = SlowReader(server, token)
        reader.start()
        try:
            time.sleep(1.0)
            during = _latencies(http, 30)
            time.sleep(max(0.0, 5.0 - 1.0 - sum(during)))
            assert reader.status_line.startswith(b"HTTP/1.1 200"), reader.status_line
            assert 2e6 < reader.received < total / 2, reader.received  # mid-stream, and really streaming
        finally:
            reader.stop.set()
            reader.join(10)
    # The slow stream holds no worker: fast requests keep their latency.
    assert statistics.median(during) < max(5 * statistics.median(baseline), 0.25), (baseline, during)
    assert max(during) < 5.0, during
