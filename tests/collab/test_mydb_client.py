"""MyDB from the Python client (lab.mydb, sim.sql(into=)), and points jobs that take their sensors from a
table: the same values as the same points sent inline, for the owner and for a group member it is shared with."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labclient import AuthError, InvalidRequest, Lab, LimitError, NotFoundError
from tests.plugin.mydb import mydb_site, ok, wait_job

pytestmark = pytest.mark.dask
SIM = "cosmo64"
RNG = np.random.default_rng(21)
SENSORS = pd.DataFrame({"id": np.arange(300), "x": RNG.uniform(0, 6.2, 300), "y": RNG.uniform(0, 6.2, 300),
                        "z": RNG.uniform(0, 6.2, 300)})  # fmt: skip


@pytest.fixture(scope="module")
def site(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with mydb_site(demo_data, tmp_path_factory.mktemp("mydb-client"), ("alice", "bob", "carol"),
                   ("cosmo64", "isotropic64"), jobs_enabled=True, sql_max_rows=1000) as s:  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def labs(site) -> Iterator[dict[str, Lab]]:
    out = {n: Lab(site["url"], token=site[n].token, retries=0) for n in ("alice", "bob", "carol")}
    yield out
    for lab in out.values():
        lab.close()


def test_the_readme_example_save_share_read(site, labs) -> None:
    """README "Working together": save halos into MyDB, share them with a group, a colleague reads them."""
    alice, bob = labs["alice"], labs["bob"]
    # -- the example, as in the README --
    sim = alice.dataset("cosmo64")
    sim.sql("SELECT id, mass, x, y, z FROM halos WHERE snap = 30 AND mass > 1e13", into="massive")
    alice.groups.create("lensing")
    alice.groups.add("lensing", "bob")
    alice.mydb.share("massive", "lensing")
    # ... and bob, in the same group:
    halos = bob.mydb.table("alice.massive")
    mine = bob.mydb.sql("SELECT count(*) AS n, max(mass) AS top FROM alice.massive")
    # -- checks --
    want = sim.sql("SELECT id, mass, x, y, z FROM halos WHERE snap = 30 AND mass > 1e13")
    pd.testing.assert_frame_equal(halos, want)
    assert mine.n[0] == len(want) > 0 and mine.top[0] == want.mass.max()
    assert [t["ref"] for t in bob.mydb.tables(shared=True)] == ["alice.massive"]
    with pytest.raises(AuthError, match="read-only"):
        bob.mydb.drop("alice.massive")
    alice.mydb.unshare("massive", "lensing")
    with pytest.raises(NotFoundError):
        bob.mydb.table("alice.massive")
    alice.mydb.drop("massive")


def test_upload_read_sql_and_errors_from_the_client(labs, tmp_path: Path) -> None:
    alice = labs["alice"]
    info = alice.mydb.upload(SENSORS, "sensors")
    assert info["rows"] == 300 and info["ref"] == "mydb.sensors"
    pd.testing.assert_frame_equal(alice.mydb.table("sensors"), SENSORS)
    pd.testing.assert_frame_equal(alice.mydb.table("mydb.sensors", limit=5, offset=10),
                                  SENSORS.iloc[10:15].reset_index(drop=True))  # fmt: skip
    SENSORS.to_csv(tmp_path / "s.csv", index=False)
    assert alice.mydb.upload(tmp_path / "s.csv", "sensors_csv")["rows"] == 300
    got = alice.mydb.download("sensors_csv", tmp_path / "back.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(got), SENSORS)
    far = alice.mydb.sql("SELECT id FROM mydb.sensors WHERE x > 6 ORDER BY id")
    assert list(far.id) == sorted(SENSORS.id[SENSORS.x > 6])
    saved = alice.mydb.sql("SELECT id, x FROM mydb.sensors WHERE x < 1", into="west")
    assert saved["rows"] == int((SENSORS.x < 1).sum())
    assert {t["name"] for t in alice.mydb.tables()} >= {"sensors", "sensors_csv", "west"}
    assert alice.mydb.usage()["used_bytes"] > 0
    with pytest.raises(InvalidRequest, match="table name"):
        alice.mydb.upload(SENSORS, "Bad Name")
    with pytest.raises(InvalidRequest, match="does not exist"):
        alice.mydb.sql("SELECT * FROM mydb.nothere")
    with pytest.raises(LimitError, match='"kind": "sql"'):
        alice.dataset(SIM).sql("SELECT * FROM halos")
    job = alice.dataset(SIM).sql("SELECT * FROM halos", job=True)
    job.wait(timeout=120)
    assert len(pd.read_parquet(job.download(tmp_path / "job", "result.parquet"))) > 1000
    with pytest.raises(AuthError, match="mydb scope"), Lab(alice.url, retries=0) as public:
        public.mydb.tables()
    for name in ("sensors_csv", "west"):
        alice.mydb.drop(name)


def _submit(person, body: dict) -> str:
    r = person.post("/jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _values(person, job_id: str) -> np.ndarray:
    info = wait_job(person, job_id, timeout=300)  # the first points job compiles the kernels (numba)
    assert info["status"] == "done", info
    return np.load(io.BytesIO(person.get(f"/jobs/{job_id}/files/points.npy").content))


def _points(person, body: dict) -> np.ndarray:
    return _values(person, _submit(person, body))


def test_a_points_job_from_a_table_equals_the_same_points_inline(site, labs) -> None:
    alice, bob = site["alice"], site["bob"]
    if not any(t["name"] == "sensors" for t in labs["alice"].mydb.tables()):
        labs["alice"].mydb.upload(SENSORS, "sensors")
    query = {"kind": "points", "dataset": "isotropic64", "variable": "velocity", "time": 6.0}
    jobs = [_submit(alice, {**query, "points": SENSORS[["x", "y", "z"]].to_numpy().tolist()}),
            _submit(alice, {**query, "points_table": "mydb.sensors"})]  # fmt: skip
    inline, from_table = (_values(alice, j) for j in jobs)
    assert inline.shape == (300, 3)
    np.testing.assert_array_equal(from_table, inline)
    # a member of a group the table is shared with uses it as alice.sensors; after unsharing they cannot
    ok(alice.post("/groups", json={"name": "sensors-team"}), 201)
    ok(alice.put("/groups/sensors-team/members/bob", json={"role": "member"}))
    assert bob.post("/jobs", json={**query, "points_table": "alice.sensors"}).status_code == 404
    ok(alice.put("/mydb/tables/sensors/shares/sensors-team"))
    np.testing.assert_array_equal(_points(bob, {**query, "points_table": "alice.sensors"}), inline)
    ok(alice.delete("/mydb/tables/sensors/shares/sensors-team"))
    r = bob.post("/jobs", json={**query, "points_table": "alice.sensors"})
    assert r.status_code == 404 and "no table" in r.json()["detail"], r.text


def test_bad_points_tables_are_a_clear_4xx(site, labs) -> None:
    alice = site["alice"]
    ok(alice.put("/mydb/tables/flat", content="x,y\n1,2\n", headers={"Content-Type": "text/csv"}), 201)
    ok(alice.put("/mydb/tables/words", content="x,y,z\na,b,c\n", headers={"Content-Type": "text/csv"}), 201)
    ok(alice.put("/mydb/tables/empty", content="x,y,z\n", headers={"Content-Type": "text/csv"}), 201)
    ok(alice.put("/mydb/tables/nans", content="x,y,z\n1,2,\n", headers={"Content-Type": "text/csv"}), 201)
    query = {"kind": "points", "dataset": "isotropic64", "variable": "velocity", "time": 6.0}
    cases = [
        ({"points_table": "mydb.flat"}, 422, "no column z"),
        ({"points_table": "mydb.words"}, 422, "must be numbers"),
        ({"points_table": "mydb.empty"}, 422, "N >= 1"),
        ({"points_table": "mydb.nans"}, 422, "finite"),
        ({"points_table": "mydb.nothere"}, 404, "no table"),
        ({"points_table": "../../etc/passwd"}, 422, "table name"),
        ({"points_table": "mydb.flat", "points": [[1, 2, 3]]}, 422, "either points or points_table"),
        ({"points_table": 5}, 422, "points_table"),
    ]
    for extra, status, words in cases:
        r = alice.post("/jobs", json={**query, **extra})
        assert r.status_code == status and words in r.text, (extra, r.status_code, r.text[:300])
    for name in ("flat", "words", "empty", "nans"):
        ok(alice.delete(f"/mydb/tables/{name}"))
