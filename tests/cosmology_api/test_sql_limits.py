"""SQL limits set by LABSERVICE_SQL_* settings: each one hit through a real server is a clear 413."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labclient import Lab, LimitError
from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.settings import Settings
from tests.plugin.cosmo import SIM

LIMITS = {"sql_max_rows": 5, "sql_timeout_seconds": 1.0, "sql_memory_limit": "32MB", "sql_threads": 2}


@pytest.fixture(scope="module")
def tight(sim_dir, tmp_path_factory) -> Iterator[Lab]:
    settings = Settings(
        data_dir=sim_dir.parent,
        token_db=tmp_path_factory.mktemp("sql") / "tokens.sqlite",
        public_requests_per_minute=100_000,
        **LIMITS,
    )
    with ServerThread(create_app(settings)) as server, Lab(server.url, retries=0) as lab:
        yield lab


def test_limits_are_in_the_metadata(tight):
    info = tight.dataset(SIM).info["sql"]
    assert info["max_rows"] == 5 and info["timeout_seconds"] == 1.0
    assert info["memory_limit"] == "32MB" and info["threads"] == 2


def test_row_cap(tight):
    sim = tight.dataset(SIM)
    with pytest.raises(LimitError) as hit:
        sim.sql("SELECT id FROM halos ORDER BY id")
    assert (
        hit.value.status == 413 and "more than 5 rows" in hit.value.detail and "truncate" in hit.value.detail
    )
    first = sim.sql("SELECT id FROM halos ORDER BY id", truncate=True)
    assert first["id"].tolist() == [0, 1, 2, 3, 4] and first.attrs["truncated"] is True
    assert sim.sql("SELECT id FROM halos ORDER BY id LIMIT 5").attrs["truncated"] is False


@pytest.mark.parametrize(
    "query,needle",
    [
        ("SELECT count(*) AS n FROM range(10000000000) a, range(10) b", "longer than 1 s"),
        ("SELECT list(i) AS l FROM range(20000000) t(i)", "32MB of memory"),
    ],
)
def test_time_and_memory(tight, query, needle):
    with pytest.raises(LimitError) as hit:
        tight.dataset(SIM).sql(query)
    assert hit.value.status == 413 and needle in hit.value.detail
    assert tight.dataset(SIM).sql("SELECT current_setting('threads') AS t")["t"][0] == 2
