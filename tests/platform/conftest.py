"""The platform-database tests run against both back ends: the embedded SQLite file and a real PostgreSQL."""

from __future__ import annotations

import pytest

import labservice.db


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An empty, migrated platform database of each kind (`labservice db upgrade` run on it)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'labservice.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    labservice.db.upgrade(url)
    return url
