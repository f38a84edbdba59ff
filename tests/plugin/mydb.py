"""Helpers of the MyDB tests (tests/collab/test_mydb*.py, tests/jobs/test_sql_kind.py): a small data folder
with the demo simulation (and a field dataset), users with tokens, and HTTP clients acting as them.

No fixtures here: each test module builds its own server from these, so nothing is shared by accident.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from labservice.limits import Limits
from labservice.tokens import TokenStore
from labservice.users import UserStore
from tests.plugin.data import require_demo

USER_LIMITS = Limits(
    points_per_request=100_000, requests_per_minute=100_000, max_concurrent=64, jobs_allowed=True,
    max_running_jobs=8, scratch_bytes=256 << 20, max_job_bytes=128 << 20,
)  # fmt: skip


def data_folder(demo_data: Path, where: Path, names: tuple[str, ...] = ("cosmo64",)) -> Path:
    """A folder serving only ``names`` of the demo data (links, nothing copied)."""
    where.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = where / name
        if not link.exists():
            link.symlink_to(require_demo(demo_data, name), target_is_directory=True)
    return where


class Person(httpx.Client):
    """An HTTP client with a user's token, rooted at /api/v1; ``name`` is the user name."""

    def __init__(self, url: str, name: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(base_url=f"{url}/api/v1", headers=headers, timeout=120)
        self.name, self.token = name, token


def make_people(
    where: str,
    url: str,
    names: tuple[str, ...],
    mydb_mb: dict[str, int] | None = None,
    scopes: dict[str, str] | None = None,
) -> dict[str, Person]:
    """Users ``names`` (created when new, with MyDB quotas from ``mydb_mb``) with one token each."""
    users, tokens = UserStore(where), TokenStore(where)
    out = {}
    for name in names:
        try:
            users.get(name)
        except Exception:
            users.create(name)
        if mydb_mb and name in mydb_mb:
            users.set_limits(name, mydb_mb=mydb_mb[name])
        token = tokens.create(f"{name}-token", USER_LIMITS, user=name, scopes=(scopes or {}).get(name))[1]
        out[name] = Person(url, name, token)
    return out


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of a response that must have ``status`` (the body in the message otherwise)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    return response.json()


@contextmanager
def mydb_site(
    demo_data: Path,
    root: Path,
    people: tuple[str, ...] = ("alice", "bob"),
    datasets: tuple[str, ...] = ("cosmo64",),
    **options: Any,
) -> Iterator[dict[str, Any]]:
    """A real server over ``datasets`` of the demo data with everything in ``root`` (platform database, user
    store, scratch); ``jobs_enabled=True`` in ``options`` starts its embedded engine. Yields
    ``{"url", "root", "settings", name: Person...}``."""
    from labservice.app import create_app
    from labservice.devserver import ServerThread
    from labservice.settings import Settings

    settings = Settings(
        data_dir=data_folder(demo_data, root / "data", datasets), token_db=root / "platform.sqlite",
        job_db=root / "platform.sqlite", scratch_url=str(root / "scratch"), user_store_url=str(root / "store"),
        public_requests_per_minute=100_000, public_max_concurrent=64, **options,
    )  # fmt: skip
    with ServerThread(create_app(settings)) as server:
        clients = make_people(str(settings.tokens_database_url()), server.url, people)
        try:
            yield {"url": server.url, "root": root, "settings": settings, **clients}
        finally:
            for c in clients.values():
                c.close()


def wait_job(person: Person, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until it ends (bounded); its final record."""
    deadline = time.monotonic() + timeout
    while True:
        info = ok(person.get(f"/jobs/{job_id}"))
        if info["status"] in ("done", "failed", "cancelled", "expired"):
            return info
        assert time.monotonic() < deadline, f"job {job_id} still {info['status']} after {timeout} s"
        time.sleep(0.2)
