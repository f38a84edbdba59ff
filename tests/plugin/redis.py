"""A real Redis server for tests: ``redis-server`` on a free loopback port in a temporary folder.

``redis_server`` (module scope) yields a :class:`RedisServer`; tests may ``stop()`` and ``start()`` it
(same port) to check how the service lives through an outage. It is stopped after the module, leaving
nothing behind. Skips when ``redis-server`` is not installed (``apt-get install redis-server``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from labservice.devserver import RedisServer

__all__ = ["RedisServer", "redis_server"]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="lab-redis-") as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()
