"""The fixture chain of every HTTP test: served_data -> settings -> app -> server -> http / lab -> tokens.

A folder's conftest defines ``settings`` (session scope, usually with :func:`make_settings` from its
``served_data``) and names its tokens with ``make_token``; everything after ``settings`` comes from here.

Each ``Settings`` object gets one app, one uvicorn server and one token store, started on first use and
kept until the session ends (as session-scoped fixtures were). The chain fixtures are module-scoped views
of that pool: a session-scoped fixture here would keep the first folder's server for every later folder,
because pytest caches it without looking at which ``settings`` override it was built from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore


def make_settings(served: dict[str, str] | Path, workdir: Path, **options: Any) -> Settings:
    """Settings serving ``served`` (``{id: url}`` or a data folder), with the token file in ``workdir``."""
    where = {"datasets": served} if isinstance(served, dict) else {"data_dir": served}
    # Tokens, jobs and MyDB tables in files of the test's own, never in the shared demo data folder.
    options.setdefault("job_db", workdir / "tokens.sqlite")
    options.setdefault("user_store_url", str(workdir / "mydb"))
    return Settings(**where, token_db=workdir / "tokens.sqlite", **options)


def jobs_settings(served: dict[str, str] | Path, workdir: Path, **options: Any) -> Settings:
    """:func:`make_settings` with the job engine on (an embedded Dask LocalCluster) and scratch in ``workdir``."""
    return make_settings(served, workdir, scratch_url=str(workdir / "scratch"), jobs_enabled=True, **options)


@dataclass
class Stack:
    """One app, its running server and its token store, for one ``Settings``."""

    settings: Settings
    app: Any
    server: ServerThread | None = None
    tokens: TokenStore | None = None
    named: dict[str, str] = field(default_factory=dict)  # token name -> token


class Stacks:
    """The running stacks of the session, keyed by the ``Settings`` object they serve."""

    def __init__(self) -> None:
        self._stacks: dict[int, Stack] = {}

    def get(self, settings: Settings) -> Stack:
        stack = self._stacks.get(id(settings))
        if stack is None:
            stack = self._stacks[id(settings)] = Stack(settings, create_app(settings))
        return stack

    def server(self, settings: Settings) -> ServerThread:
        stack = self.get(settings)
        if stack.server is None:
            stack.server = ServerThread(stack.app).start()
        return stack.server

    def tokens(self, settings: Settings) -> TokenStore:
        stack = self.get(settings)
        if stack.tokens is None:
            path = settings.token_db_path()
            if path is None:
                raise RuntimeError("these test settings have no token_db: build them with make_settings()")
            stack.tokens = TokenStore(path)
        return stack.tokens

    def token(self, settings: Settings, name: str, limits: Limits) -> str:
        """A registered token, created once per settings and name."""
        stack = self.get(settings)
        if name not in stack.named:
            stack.named[name] = self.tokens(settings).create(name, limits)[1]
        return stack.named[name]

    def stop(self) -> None:
        for stack in reversed(list(self._stacks.values())):  # last started, first stopped
            if stack.server is not None:
                stack.server.stop()
        self._stacks.clear()


@pytest.fixture(scope="session")
def stacks() -> Iterator[Stacks]:
    pool = Stacks()
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(scope="module")
def app(settings: Settings, stacks: Stacks) -> Any:
    """The FastAPI app for this folder's ``settings`` (not serving until ``server`` is used)."""
    return stacks.get(settings).app


@pytest.fixture(scope="module")
def server(settings: Settings, stacks: Stacks) -> ServerThread:
    """A real uvicorn server on a free loopback port, serving this folder's ``settings``."""
    return stacks.server(settings)


@pytest.fixture(scope="module")
def tokens(settings: Settings, stacks: Stacks) -> TokenStore:
    """The token store of this folder's server."""
    return stacks.tokens(settings)


@pytest.fixture(scope="module")
def make_token(settings: Settings, stacks: Stacks) -> Any:
    """``make_token(name, limits) -> str``: a token of this folder's server, made once per name."""
    return lambda name, limits: stacks.token(settings, name, limits)


@pytest.fixture(scope="session")
def http_base() -> str:
    """The path ``http`` is rooted at; a folder overrides it (the portal's pages, one simulation)."""
    return "/api/v1"


@pytest.fixture
def http(server: ServerThread, http_base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + http_base, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def lab(server: ServerThread) -> Iterator[Any]:
    """The thin client on this folder's server, without retries (a test sees every answer)."""
    from labclient import Lab

    with Lab(server.url, retries=0) as client:
        yield client
