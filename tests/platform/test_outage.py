"""PostgreSQL stopped or restarted under load: 503 with Retry-After while it is away, then recovery,
and no job lost or recorded twice."""

from __future__ import annotations

import threading
import time

import httpx

import labservice.db
from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.errors import DatabaseUnavailable
from labservice.jobs.registry import JobRegistry
from labservice.limits import Limits
from labservice.settings import Settings
from labservice.tokens import TokenStore
from tests.plugin.postgres import PostgresServer

MAX_REQUESTS = 3000  # per load thread; the loops also stop when the test says so


def test_postgresql_restart_under_load(private_postgres: PostgresServer) -> None:
    url = private_postgres.create_database()
    labservice.db.upgrade(url)
    store = TokenStore(url)
    tokens = [
        store.create(f"user{i}", Limits(requests_per_minute=100_000, max_concurrent=64))[1] for i in range(4)
    ]
    registry = JobRegistry(url)
    answers: list[tuple[float, int, str | None, str]] = []  # (time, status, Retry-After, code)
    submitted: list[str] = []
    refused = 0
    stop = threading.Event()

    def load(token: str) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(MAX_REQUESTS):
                if stop.is_set():
                    return
                r = client.get(srv.url + "/api/v1/datasets", headers={"Authorization": f"Bearer {token}"})
                code = r.json().get("code", "") if r.status_code != 200 else ""
                answers.append((time.monotonic(), r.status_code, r.headers.get("retry-after"), code))
                time.sleep(0.02)

    def submit() -> None:
        nonlocal refused
        for _ in range(MAX_REQUESTS):
            if stop.is_set():
                return
            try:
                rec, _ = registry.insert_if_within("owner", "points", {}, 1, None, None)
                submitted.append(rec.id)  # type: ignore[union-attr]
            except DatabaseUnavailable:
                refused += 1
            time.sleep(0.02)

    settings = Settings(database_url=url)
    with ServerThread(create_app(settings)) as srv:
        threads = [threading.Thread(target=load, args=(t,)) for t in tokens] + [
            threading.Thread(target=submit)
        ]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            private_postgres.stop()  # away for 2 s: longer than the token cache, so requests need the database
            down = time.monotonic()
            time.sleep(2.0)
            private_postgres.start()
            up = time.monotonic()
            time.sleep(1.5)
            private_postgres.restart()  # pg_ctl restart: every pooled connection is cut
            restarted = time.monotonic()
            time.sleep(2.0)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        after = httpx.get(srv.url + "/api/v1/datasets", headers={"Authorization": f"Bearer {tokens[0]}"})

    statuses = {a[1] for a in answers}
    assert statuses <= {200, 503}, statuses
    outage = [a for a in answers if a[1] == 503]
    assert outage, "no request needed the database while it was stopped"
    assert all(a[2] is not None and int(a[2]) >= 1 and a[3] == "database_unavailable" for a in outage)
    assert all(down - 0.5 <= a[0] <= restarted + 1.0 for a in outage)  # only while it was away
    assert any(a[1] == 200 and up < a[0] < restarted for a in answers)  # back after the start ...
    late = [a[1] for a in answers if a[0] > restarted + 1.0]
    assert late and set(late) == {200}  # ... and after the restart
    assert after.status_code == 200
    # Every submission that returned a record is there once; none that raised slipped in.
    assert refused > 0 and submitted
    ids = [r.id for r in registry.list(owner="owner")]
    assert sorted(ids) == sorted(submitted) and len(set(ids)) == len(ids)
