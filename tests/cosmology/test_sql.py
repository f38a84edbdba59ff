"""The SQL endpoint's engine: read-only SELECTs, with files, ATTACH, extensions, COPY and SET all refused."""

from __future__ import annotations

import pytest

from labservice.datasets.sql import SqlEngine
from labservice.errors import InvalidInput, LimitExceeded


@pytest.fixture(scope="module")
def engine(small_sim):
    e = SqlEngine(small_sim / "halos.parquet", max_rows=3, timeout=1.0)
    yield e
    e.close()


def test_row_cap_is_an_error_unless_truncation_is_asked_for(engine):
    with pytest.raises(LimitExceeded, match="more than 3 rows.*truncate=true"):
        engine.query("SELECT id, mass FROM halos ORDER BY mass DESC")
    res = engine.query("SELECT id, mass FROM halos ORDER BY mass DESC", truncate=True)
    assert list(res.frame.columns) == ["id", "mass"] and len(res.frame) == 3 and res.truncated
    top = engine.query("SELECT max(mass) AS m FROM trees").frame["m"][0]
    assert res.frame["mass"][0] == top
    exact = engine.query("SELECT id FROM halos ORDER BY id LIMIT 3")  # exactly the cap: not truncated
    assert len(exact.frame) == 3 and not exact.truncated


def test_memory_limit_and_threads(small_sim):
    e = SqlEngine(small_sim / "halos.parquet", max_rows=10, timeout=10.0, memory_limit="32MB", threads=2)
    try:
        with pytest.raises(LimitExceeded, match="32MB of memory"):
            e.query("SELECT list(i) AS l FROM range(20000000) t(i)")
        assert e.query("SELECT current_setting('threads') AS t").frame["t"][0] == 2
        assert e.query("SELECT current_setting('memory_limit') AS m").frame["m"][0].startswith("30")  # 32 MB
        assert e.limits() == {"max_rows": 10, "timeout_seconds": 10.0, "memory_limit": "32MB", "threads": 2,
                              "tables": ["halos", "snapshots", "trees"]}
    finally:
        e.close()


@pytest.mark.parametrize(
    "sql,message",
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
        ("SELECT * FROM read_text('/etc/hostname')", "disabled"),
        ("SELECT * FROM '/etc/hostname'", "does not exist"),  # no replacement scan of file names
    ],
)
def test_reading_files_fails(engine, sql, message):
    with pytest.raises(InvalidInput, match=message):
        engine.query(sql)


@pytest.mark.parametrize(
    "sql,raw_message",
    [
        ("ATTACH '/tmp/other.duckdb' AS other", "disabled"),
        ("INSTALL httpfs", "disabled"),
        ("LOAD httpfs", "disabled"),
        ("COPY halos TO '/tmp/halos.csv'", "disabled"),
        ("SET enable_external_access = true", "locked"),
        ("SET memory_limit = '10GB'", "locked"),
    ],
)
def test_statements_fail_twice(engine, sql, raw_message):
    # The SELECT-only filter refuses them with a clear message, and the locked DuckDB refuses them too.
    with pytest.raises(InvalidInput, match="only SELECT"):
        engine.query(sql)
    with pytest.raises(Exception, match=raw_message):
        engine.raw(sql)


def test_timeout_interrupts(engine):
    with pytest.raises(LimitExceeded, match="longer than 1 s"):
        engine.query("SELECT count(*) FROM range(10000000000) a, range(10) b")
    assert engine.query("SELECT 1 AS one").frame["one"][0] == 1  # the engine still works afterwards


def test_multiple_statements_refused(engine):
    with pytest.raises(InvalidInput, match="exactly one"):
        engine.query("SELECT 1; SELECT 2")


def test_concurrent_queries_all_answer(engine):
    """Queries from many threads at once take turns on the one connection; none is refused as busy."""
    from concurrent.futures import ThreadPoolExecutor

    queries = [f"SELECT count(*) AS n FROM halos WHERE snap >= {i % 5} AND mass > {i}" for i in range(400)]
    expected = [engine.query(q).frame["n"][0] for q in queries[:5]]
    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(lambda q: engine.query(q).frame["n"][0], queries))
    assert counts[:5] == expected and len(counts) == 400
