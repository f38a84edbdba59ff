"""A tiny real HTTP server that counts what it receives, for the client's retry and resume tests.

``CountingServer`` runs a Starlette app on uvicorn (``labservice.devserver.ServerThread``) on a free port.
Each route records its hits (and request headers) in ``server.hits[name]``; tests add routes with behaviour:
busy answers with Retry-After, answers slower than the client's timeout, bodies cut mid-way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from labservice.devserver import ServerThread

Handler = Callable[[Request, int], Awaitable[Response]]


class CountingServer:
    """Routes added with :meth:`route` before :meth:`start`; ``hits[name]`` lists each request's headers."""

    def __init__(self) -> None:
        self.hits: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.routes: list[Route] = []
        self.thread: ServerThread | None = None

    def route(self, path: str, name: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> None:
        async def endpoint(request: Request) -> Response:
            self.hits[name].append(dict(request.headers))
            await request.body()
            return await handler(request, len(self.hits[name]))

        self.routes.append(Route(path, endpoint, methods=list(methods)))

    def start(self) -> CountingServer:
        self.thread = ServerThread(Starlette(routes=self.routes)).start()
        return self

    @property
    def url(self) -> str:
        assert self.thread is not None, "start() the server first"
        return self.thread.url

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()


@pytest.fixture
def counting() -> Iterator[Any]:
    """A fresh :class:`CountingServer`; the test adds routes and calls ``start()``; stopped afterwards."""
    server = CountingServer()
    yield server
    server.stop()
