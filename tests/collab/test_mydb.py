"""MyDB over a real server: save a query result, upload, list, read in every format, drop; quotas; names that
are not identifiers or would leave the user store; one user's SQL never reaching another's tables; shared
tables read-only and gone at once when unshared."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labservice.app import create_app
from labservice.devserver import ServerThread
from labservice.settings import Settings
from tests.plugin.mydb import data_folder, make_people, ok

SIM = "cosmo64"
MASSIVE = "SELECT id, snap, mass, x, y, z FROM halos WHERE snap = 30 ORDER BY mass DESC LIMIT 50"


@pytest.fixture(scope="module")
def site(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("mydb")
    settings = Settings(
        data_dir=data_folder(demo_data, root / "data"), token_db=root / "platform.sqlite",
        user_store_url=str(root / "store"), sql_max_rows=1000,
        public_requests_per_minute=100_000, public_max_concurrent=64,
    )  # fmt: skip
    with ServerThread(create_app(settings)) as server:
        people = make_people(
            str(settings.tokens_database_url()),
            server.url,
            ("alice", "bob", "carol", "dave"),
            mydb_mb={"carol": 1},
            scopes={"dave": "read,jobs"},
        )
        yield {"url": server.url, "root": root, "store": root / "store", **people}
        for p in people.values():
            p.close()


def _files(folder: Path) -> set[str]:
    return (
        {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()
    )


def _group(owner, name: str, *members: str) -> None:
    if owner.get(f"/groups/{name}").status_code == 404:
        ok(owner.post("/groups", json={"name": name}), 201)
    for m in members:
        ok(owner.put(f"/groups/{name}/members/{m}", json={"role": "member"}))


def test_save_list_read_and_drop_a_query_result(site) -> None:
    alice = site["alice"]
    quick = ok(alice.post(f"/datasets/{SIM}/sql", json={"sql": MASSIVE}))
    expected = pd.DataFrame(quick["rows"], columns=quick["columns"])
    saved = ok(alice.post(f"/datasets/{SIM}/sql", json={"sql": MASSIVE, "into": "massive"}), 201)
    assert saved["ref"] == "mydb.massive" and saved["rows"] == 50 and saved["shared"] is False
    assert [c["name"] for c in saved["columns"]] == ["id", "snap", "mass", "x", "y", "z"]
    listed = ok(alice.get("/mydb/tables"))
    assert [t["name"] for t in listed["tables"]] == ["massive"]
    assert listed["usage"]["used_bytes"] == saved["bytes"] > 0
    assert ok(alice.get("/mydb/tables/massive"))["rows"] == 50
    as_json = ok(alice.get("/mydb/tables/massive", params={"format": "json"}))
    pd.testing.assert_frame_equal(pd.DataFrame(as_json["rows"], columns=as_json["columns"]), expected)
    as_csv = pd.read_csv(io.StringIO(alice.get("/mydb/tables/mydb.massive", params={"format": "csv"}).text))
    pd.testing.assert_frame_equal(as_csv, expected)
    as_parquet = pq.read_table(
        io.BytesIO(alice.get("/mydb/tables/massive", params={"format": "parquet"}).content)
    )
    pd.testing.assert_frame_equal(as_parquet.to_pandas(), expected)
    first = ok(alice.get("/mydb/tables/massive", params={"format": "json", "limit": 3, "offset": 2}))
    assert [r["id"] for r in first["rows"]] == list(expected.id[2:5])
    # SQL over MyDB, joined with the catalog it came from
    mine = ok(
        alice.post(
            "/mydb/sql",
            json={
                "sql": f"SELECT m.id, h.mass FROM mydb.massive m JOIN {SIM}.halos h ON h.id = m.id ORDER BY m.mass DESC"
            },
        )
    )
    assert [(r["id"], r["mass"]) for r in mine["rows"]] == list(zip(expected.id, expected.mass, strict=True))
    assert ok(alice.delete("/mydb/tables/massive")) == {"dropped": "mydb.massive"}
    assert alice.get("/mydb/tables/massive").status_code == 404
    assert ok(alice.get("/mydb/tables"))["tables"] == []
    assert not [f for f in _files(site["store"]) if "massive" in f]  # the file went with the row


def test_upload_csv_and_parquet_and_replace(site) -> None:
    bob = site["bob"]
    csv = "x,y,z,label\n0.1,0.2,0.3,a\n1.5,2.5,3.5,b\n"
    got = ok(bob.put("/mydb/tables/sensors", content=csv, headers={"Content-Type": "text/csv"}), 201)
    assert got["rows"] == 2 and [c["name"] for c in got["columns"]] == ["x", "y", "z", "label"]
    frame = pd.DataFrame({"x": np.linspace(0, 1, 7), "y": np.arange(7), "name": list("abcdefg")})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
    before = _files(site["store"])
    got = ok(
        bob.put(
            "/mydb/tables/sensors",
            content=buf.getvalue(),
            headers={"Content-Type": "application/octet-stream"},
        ),
        201,
    )  # sniffed: PAR1
    assert got["rows"] == 7
    assert len(_files(site["store"])) == len(before)  # replaced: the old version's file is gone
    back = pq.read_table(io.BytesIO(bob.get("/mydb/tables/sensors", params={"format": "parquet"}).content))
    pd.testing.assert_frame_equal(back.to_pandas(), frame)
    q = ok(bob.post("/mydb/sql", json={"sql": "SELECT sum(y) AS s FROM mydb.sensors"}))
    assert q["rows"] == [{"s": 21}]
    ok(bob.delete("/mydb/tables/sensors"))


def test_public_callers_get_401_and_tokens_without_mydb_403(site) -> None:
    import httpx

    with httpx.Client(base_url=site["url"] + "/api/v1") as public:
        r = public.post(f"/datasets/{SIM}/sql", json={"sql": "SELECT 1 AS one", "into": "t"})
        assert r.status_code == 401 and "mydb scope" in r.json()["detail"], r.text
        for method, path in [("GET", "/mydb/tables"), ("GET", "/mydb/tables/t"), ("PUT", "/mydb/tables/t"),
                             ("DELETE", "/mydb/tables/t"), ("POST", "/mydb/sql")]:  # fmt: skip
            r = public.request(method, path, json={"sql": "SELECT 1"} if method == "POST" else None)
            assert r.status_code == 401 and "mydb scope" in r.json()["detail"], (method, path, r.text)
        assert public.post(f"/datasets/{SIM}/sql", json={"sql": "SELECT 1 AS one"}).status_code == 200
    dave = site["dave"]  # a token with read and jobs only
    for r in (
        dave.get("/mydb/tables"),
        dave.post(f"/datasets/{SIM}/sql", json={"sql": "SELECT 1", "into": "t"}),
    ):
        assert r.status_code == 403 and "'mydb' scope" in r.json()["detail"], r.text


BAD_NAMES = [
    "Halos",
    "1abc",
    "a-b",
    "a b",
    "x" * 64,
    "_x",
    "a.b.c",
    "..",
    "%2e%2e",
    "..%2Fescape",
    "%2Fetc%2Fpasswd",
    "name;drop",
    "h\u00e9",
    "a\\b",
]


def test_bad_input_is_a_clear_4xx_never_5xx(site) -> None:
    alice = site["alice"]
    ok(alice.put("/mydb/tables/good", content="a,b\n1,2\n", headers={"Content-Type": "text/csv"}), 201)
    before = _files(site["root"])
    for name in BAD_NAMES:
        for method in ("GET", "PUT", "DELETE"):
            r = alice.request(method, f"/mydb/tables/{name}", content=b"a\n1\n" if method == "PUT" else None)
            assert r.status_code in (404, 405, 422), (method, name, r.status_code, r.text)
        r = alice.post(
            f"/datasets/{SIM}/sql", json={"sql": "SELECT 1 AS one", "into": name.replace("%2F", "/")}
        )
        assert r.status_code == 422 and "table name" in r.text, (name, r.text)
    cases = [
        ("PUT", "/mydb/tables/t1", b"", {}, 422, "empty"),
        ("PUT", "/mydb/tables/t1", b"PAR1 not really parquet", {}, 422, "does not parse"),
        ("PUT", "/mydb/tables/t1", b"a,a\n1,2\n", {"Content-Type": "text/csv"}, 422, "own non-empty name"),
        (
            "PUT",
            "/mydb/tables/t1",
            b"\x00\x01\x02",
            {"Content-Type": "application/vnd.apache.parquet"},
            422,
            "parquet",
        ),
        ("PUT", "/mydb/tables/t1?format=xml", b"a\n1\n", {}, 422, "csv or parquet"),
        ("GET", "/mydb/tables/nothere", None, {}, 404, "no table 'nothere'"),
        ("GET", "/mydb/tables/bob.nothere", None, {}, 404, "no table"),
        ("DELETE", "/mydb/tables/nothere", None, {}, 404, "no table"),
        ("GET", "/mydb/tables/good?format=xml", None, {}, 422, "format"),
        ("GET", "/mydb/tables/good?format=json&limit=-1", None, {}, 422, "limit"),
        ("GET", "/mydb/tables?shared=maybe", None, {}, 422, "shared"),
        ("PUT", "/mydb/tables/good/shares/Bad!", None, {}, 422, "not valid"),
        ("PUT", "/mydb/tables/good/shares/nogroup", None, {}, 404, "no group"),
        ("DELETE", "/mydb/tables/good/shares/nogroup", None, {}, 404, "not shared"),
        ("PUT", "/mydb/tables/nothere/shares/nogroup", None, {}, 404, "no table"),
    ]
    for method, path, content, headers, status, words in cases:
        r = alice.request(method, path, content=content, headers=headers)
        assert r.status_code == status and words in r.text, (method, path, r.status_code, r.text[:300])
    sql_cases = [
        ({"sql": "DROP TABLE mydb.good"}, 422, "only SELECT"),
        ({"sql": "SELECT 1; SELECT 2"}, 422, "exactly one"),
        ({"sql": "SELEC nonsense"}, 422, "does not parse"),
        ({"sql": "SELECT * FROM read_csv('/etc/passwd')"}, 422, "disabled"),
        ({"sql": "COPY (SELECT 1) TO '/tmp/x.csv'"}, 422, "only SELECT"),
        ({"sql": "SELECT * FROM mydb.nothere"}, 422, "does not exist"),
        ({"sql": "SELECT 1 AS a, 2 AS a", "into": "dupes"}, 422, "several columns named a"),
        ({"sql": "SELECT 1", "into": "Bad"}, 422, "not valid"),
        ({"sql": ""}, 422, "sql"),
        ({"query": "SELECT 1"}, 422, "sql: Field required"),
    ]
    for body, status, words in sql_cases:
        r = alice.post("/mydb/sql", json=body)
        assert r.status_code == status and words in r.text, (body, r.status_code, r.text[:300])
    after = _files(site["root"])
    assert not [f for f in after - before if not f.startswith("store/")], after - before  # nothing outside
    ok(alice.delete("/mydb/tables/good"))


def test_a_save_over_the_quota_is_413_with_the_usage(site) -> None:
    carol = site["carol"]  # 1 MiB of MyDB
    ok(carol.put("/mydb/tables/small", content="a\n1\n2\n", headers={"Content-Type": "text/csv"}), 201)
    used = ok(carol.get("/mydb/tables"))["usage"]
    assert used["quota_bytes"] == 1 << 20 and 0 < used["used_bytes"] < 10_000
    rng = np.random.default_rng(1)
    big = io.BytesIO()
    pq.write_table(pa.table({"v": rng.random(200_000)}), big)
    files = _files(site["store"])
    r = carol.put(
        "/mydb/tables/big", content=big.getvalue(), headers={"Content-Type": "application/vnd.apache.parquet"}
    )
    body = r.json()
    assert r.status_code == 413 and body["code"] == "limit_exceeded", r.text
    assert (
        body["used_bytes"] == used["used_bytes"]
        and body["quota_bytes"] == 1 << 20
        and body["table_bytes"] > 1 << 20
    )
    assert "quota" in body["detail"] and "DELETE /api/v1/mydb/tables" in body["detail"]
    assert _files(site["store"]) == files  # the refused file is not left behind
    r = carol.post(
        "/mydb/sql", json={"sql": "SELECT range AS v, random() AS r FROM range(200000)", "into": "big"}
    )
    assert r.status_code == 413 and "row cap" in r.json()["detail"], (
        r.text
    )  # the quick path's cap comes first
    # 1000 rows of 200 random doubles: about 1.6 MB of Parquet, saved with into: over the quota
    r = carol.post("/mydb/sql", json={"sql": "SELECT list_transform(range(200), lambda x: random()) AS v FROM range(1000)",
                                      "into": "big"})  # fmt: skip
    assert r.status_code == 413 and r.json()["used_bytes"] == used["used_bytes"], r.text
    assert r.json()["table_bytes"] > r.json()["quota_bytes"] == 1 << 20
    assert _files(site["store"]) == files
    r = carol.post(f"/datasets/{SIM}/sql", json={"sql": "SELECT * FROM halos LIMIT 1000", "into": "big"})
    assert r.status_code == 201, r.text  # ~100 kB: fits
    assert ok(carol.get("/mydb/tables"))["usage"]["tables"] == 2


def test_the_quick_sql_413_says_how_to_submit_a_job(site) -> None:
    r = site["alice"].post(f"/datasets/{SIM}/sql", json={"sql": "SELECT * FROM halos"})
    body = r.json()
    assert r.status_code == 413 and "more than 1000 rows" in body["detail"], r.text
    assert 'POST /api/v1/jobs with {"kind": "sql", "sim": "cosmo64"' in body["detail"]
    assert "--submit" in body["detail"]
    r = site["alice"].post("/mydb/sql", json={"sql": f"SELECT * FROM {SIM}.halos"})
    assert r.status_code == 413 and '"kind": "sql"' in r.json()["detail"], r.text


def test_one_users_sql_never_reaches_anothers_unshared_table(site) -> None:
    alice, bob = site["alice"], site["bob"]
    ok(
        alice.put("/mydb/tables/secret", content="code\n4242424242\n", headers={"Content-Type": "text/csv"}),
        201,
    )
    ok(bob.put("/mydb/tables/secret", content="code\n7\n", headers={"Content-Type": "text/csv"}), 201)
    assert ok(bob.post("/mydb/sql", json={"sql": "SELECT code FROM mydb.secret"}))["rows"] == [{"code": 7}]
    for sql in ["SELECT * FROM alice.secret", "SELECT * FROM memory.alice.secret", 'SELECT * FROM "alice"."secret"',
                "SELECT * FROM alice.secret UNION ALL SELECT * FROM mydb.secret"]:  # fmt: skip
        r = bob.post("/mydb/sql", json={"sql": sql})
        assert r.status_code == 422 and "4242424242" not in r.text, (sql, r.text)
    for sql in ["SELECT * FROM duckdb_tables()", "SELECT * FROM information_schema.tables",
                "SELECT * FROM duckdb_views()", "SELECT * FROM duckdb_schemas()"]:  # fmt: skip
        r = bob.post("/mydb/sql", json={"sql": sql + " -- secret alice"})
        assert r.status_code == 200 and "alice" not in str(r.json()["rows"]), (sql, r.text[:400])
    assert bob.get("/mydb/tables/alice.secret").status_code == 404
    assert bob.delete("/mydb/tables/alice.secret").status_code == 404
    assert bob.put("/mydb/tables/alice.secret", content="a\n1\n").status_code == 404
    assert ok(alice.get("/mydb/tables/secret", params={"format": "json"}))["rows"] == [{"code": 4242424242}]
    ok(alice.delete("/mydb/tables/secret"))
    ok(bob.delete("/mydb/tables/secret"))


def test_shared_tables_are_read_only_and_unsharing_is_immediate(site) -> None:
    alice, bob, carol = site["alice"], site["bob"], site["carol"]
    _group(alice, "lensing", "bob")
    ok(alice.post(f"/datasets/{SIM}/sql", json={"sql": MASSIVE, "into": "clusters"}), 201)
    ok(
        bob.put("/mydb/tables/clusters", content="id\n1\n", headers={"Content-Type": "text/csv"}), 201
    )  # his own
    shared = ok(alice.put("/mydb/tables/clusters/shares/lensing"))
    assert shared["groups"] == ["lensing"]
    assert ok(alice.put("/mydb/tables/clusters/shares/lensing"))["groups"] == ["lensing"]  # idempotent
    listed = {t["ref"]: t for t in ok(bob.get("/mydb/tables"))["tables"]}
    assert set(listed) == {"mydb.clusters", "alice.clusters"}
    assert listed["alice.clusters"]["shared"] is True and listed["alice.clusters"]["groups"] == ["lensing"]
    assert [t["ref"] for t in ok(bob.get("/mydb/tables", params={"shared": "true"}))["tables"]] == [
        "alice.clusters"
    ]
    assert [t["ref"] for t in ok(bob.get("/mydb/tables", params={"shared": "false"}))["tables"]] == [
        "mydb.clusters"
    ]
    assert ok(bob.get("/mydb/tables/alice.clusters"))["rows"] == 50
    assert len(ok(bob.get("/mydb/tables/alice.clusters", params={"format": "json"}))["rows"]) == 50
    q = ok(
        bob.post(
            "/mydb/sql",
            json={"sql": "SELECT count(*) AS n FROM alice.clusters c JOIN mydb.clusters m USING (id)"},
        )
    )
    assert q["rows"] == [{"n": 0}]
    copy = ok(
        bob.post("/mydb/sql", json={"sql": "SELECT * FROM alice.clusters LIMIT 5", "into": "copy"}), 201
    )
    assert copy["rows"] == 5 and copy["owner"] == "bob"
    for method, path in [("DELETE", "/mydb/tables/alice.clusters"), ("PUT", "/mydb/tables/alice.clusters"),
                         ("PUT", "/mydb/tables/alice.clusters/shares/lensing"),
                         ("DELETE", "/mydb/tables/alice.clusters/shares/lensing")]:  # fmt: skip
        r = bob.request(method, path, content=b"id\n1\n" if method == "PUT" else None)
        assert r.status_code == 403 and "read-only" in r.json()["detail"], (method, path, r.text)
    assert carol.get("/mydb/tables/alice.clusters").status_code == 404  # not in the group
    assert carol.post("/mydb/sql", json={"sql": "SELECT * FROM alice.clusters"}).status_code == 422
    ok(alice.delete("/mydb/tables/clusters/shares/lensing"))
    assert bob.get("/mydb/tables/alice.clusters").status_code == 404
    assert bob.post("/mydb/sql", json={"sql": "SELECT * FROM alice.clusters"}).status_code == 422
    assert [t["ref"] for t in ok(bob.get("/mydb/tables"))["tables"]] == ["mydb.clusters", "mydb.copy"]
    # sharing again, then removing bob from the group, also takes it away at once
    ok(alice.put("/mydb/tables/clusters/shares/lensing"))
    assert bob.get("/mydb/tables/alice.clusters").status_code == 200
    ok(alice.delete("/groups/lensing/members/bob"))
    assert bob.get("/mydb/tables/alice.clusters").status_code == 404
    # dropping a shared table drops its shares
    _group(alice, "lensing", "bob")
    ok(alice.delete("/mydb/tables/clusters"))
    assert bob.get("/mydb/tables/alice.clusters").status_code == 404
    for name in ("clusters", "copy"):
        ok(bob.delete(f"/mydb/tables/{name}"))


def test_the_user_store_builds_every_path_itself(tmp_path: Path) -> None:
    """Keys are made from validated parts only, and checked again before any path is formed."""
    from labservice.datasets.mydb_store import TableStore, check_table_name
    from labservice.errors import InvalidInput

    store = TableStore(str(tmp_path / "store"))
    key = store.new_key("abc123", "halos")
    assert store.path(key).startswith(str(tmp_path / "store") + "/abc123/halos-")
    for owner, name in [("../x", "t"), ("a/b", "t"), ("", "t"), ("abc", "../t"), ("abc", "T"), ("abc", "t/u")]:
        with pytest.raises(InvalidInput):
            store.new_key(owner, name)
    for bad in ["../abc/t-0123456789abcdef.parquet", "/etc/passwd", "abc/t-0123456789abcdef.parquet/../../x",
                "abc/../t-0123456789abcdef.parquet", "abc/t.parquet", "abc//t-0123456789abcdef.parquet"]:  # fmt: skip
        with pytest.raises(InvalidInput):
            store.path(bad)
    for name in BAD_NAMES:
        with pytest.raises(InvalidInput, match="table name"):
            check_table_name(name)
    assert check_table_name("halos_z0") == "halos_z0"
