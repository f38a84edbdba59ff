"""Servers and helpers for the working-together tests (tests/collab): users with tokens, finished jobs.

A collab server is the real app on uvicorn with the job API on and no engine (``engine="external"``): a
"finished job" is written straight into the registry and the scratch store, as an engine would leave it,
so the access rules are tested without waiting for Dask.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.jobs.registry import JobRegistry
from labservice.jobs.scratch import Scratch
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore
from labservice.users import UserStore

JOB_LIMITS = Limits(
    points_per_request=10_000, requests_per_minute=100_000, max_concurrent=64, jobs_allowed=True,
    max_running_jobs=50, scratch_bytes=1 << 30, max_job_bytes=1 << 28,
)  # fmt: skip


def collab_settings(served: dict[str, str], root: Path, **options: Any) -> Settings:
    """One SQLite platform database for tokens, users and jobs; scratch in ``root``; no engine."""
    db = root / "labservice.sqlite"
    return Settings(
        datasets=served, token_db=db, job_db=db, scratch_url=str(root / "scratch"), jobs_enabled=True,
        engine="external", **options,
    )  # fmt: skip


def done_job(db_url: str | Path, scratch_url: str, owner_token: str, data: bytes = b"result bytes\n") -> str:
    """A finished job of ``owner_token`` (a token id) with one file, ``result.bin``; returns its id."""
    registry = JobRegistry(db_url)
    rec, reason = registry.insert_if_within(owner_token, "points", {"kind": "points"}, len(data), None, None)
    assert rec is not None, reason
    registry.start(rec.id, 1)
    entry = Scratch(scratch_url).put_bytes(rec.id, "result.bin", data)
    assert registry.finish(rec.id, [entry.to_dict()], len(data), time.time() + 86400)
    return rec.id


@dataclass
class Person:
    """A user with one token, and an HTTP client sending it."""

    name: str
    token: str
    token_id: str
    http: httpx.Client

    def __getattr__(self, method: str) -> Any:  # alice.get(...), alice.put(...)
        return getattr(self.http, method)


@dataclass
class Collab:
    root: Path
    settings: Settings
    url: str
    db: str
    scratch: str
    people: dict[str, Person] = field(default_factory=dict)
    clients: list[httpx.Client] = field(default_factory=list)  # closed when the module ends

    def person(
        self, name: str, scopes: str | None = None, limits: Limits = JOB_LIMITS, **user: Any
    ) -> Person:
        """A new user ``name`` (quotas in ``user``) with one token; cached per name when no scopes given."""
        if scopes is None and name in self.people:
            return self.people[name]
        users = UserStore(self.db)
        try:
            users.get(name)
        except Exception:
            from labservice.users import UserLimits

            users.create(name, limits=UserLimits(**user) if user else None)
        rec, token = TokenStore(self.db).create(f"{name}-token", limits, user=name, scopes=scopes)
        http = httpx.Client(
            base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.clients.append(http)
        p = Person(name, token, rec.id, http)
        if scopes is None:
            self.people[name] = p
        return p

    def job(self, person: Person, data: bytes = b"result bytes\n") -> str:
        return done_job(self.db, self.scratch, person.token_id, data)

    def public(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", timeout=60)


@pytest.fixture(scope="module")
def collab(sample_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collab]:
    """A collab server of its own per test module."""
    root = tmp_path_factory.mktemp("collab")
    settings = collab_settings(sample_urls, root)
    with ServerThread(create_app(settings)) as server:
        c = Collab(root, settings, server.url, str(root / "labservice.sqlite"), str(root / "scratch"))
        try:
            yield c
        finally:
            for client in c.clients:
                client.close()


@pytest.fixture(scope="module")
def collab_workers(
    sample_dir: Path, tmp_path_factory: pytest.TempPathFactory, redis_server: Any, postgres_server: Any
) -> Iterator[Collab]:
    """A collab server as deployed: `labservice serve --workers 2` with Redis and a PostgreSQL database."""
    from labservice.db import upgrade
    from labservice.db.connect import forget
    from labservice.devserver import ServeProcess

    root = tmp_path_factory.mktemp("collab-workers")
    url = postgres_server.create_database()
    upgrade(url)
    env = {
        "LABSERVICE_DATABASE_URL": url, "LABSERVICE_REDIS_URL": redis_server.url,
        "LABSERVICE_SCRATCH_URL": str(root / "scratch"), "LABSERVICE_JOBS_ENABLED": "true",
        "LABSERVICE_ENGINE": "external", "LABSERVICE_ACCESS_LOG": "false",
        "LABSERVICE_USER_STORE_URL": str(root / "store"),  # MyDB tables (not in the shared sample folder)
    }  # fmt: skip
    with ServeProcess(sample_dir, env, root / "serve.log", workers=2) as served:
        served.wait_ready()
        c = Collab(root, Settings(database_url=url), served.url, url, str(root / "scratch"))
        try:
            yield c
        finally:
            for client in c.clients:
                client.close()
            forget(url)
