"""The ``sql`` job kind on a real server with its embedded engine: the same rows as the quick endpoint, no row
cap, parquet/csv/hdf5 files, ``into`` a MyDB table, MyDB SQL as a job, bad requests as 4xx, and the
``labclient sql --submit`` command end to end."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.plugin.mydb import mydb_site, ok, wait_job

pytestmark = pytest.mark.dask
SIM = "cosmo64"
TOP = "SELECT id, snap, mass, x, y, z FROM halos WHERE snap = 30 ORDER BY mass DESC, id LIMIT 40"
ALL = "SELECT id, snap, mass FROM halos ORDER BY id"
LABCLIENT = Path(sys.executable).with_name("labclient")


@pytest.fixture(scope="module")
def site(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with mydb_site(demo_data, tmp_path_factory.mktemp("sqljobs"), jobs_enabled=True, sql_max_rows=1000) as s:
        yield s


def _submit(person, body: dict) -> str:
    r = person.post("/jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _result(person, job_id: str, fmt: str) -> bytes:
    info = wait_job(person, job_id)
    assert info["status"] == "done", info
    names = [f["name"] for f in info["files"]]
    assert f"result.{fmt}" in names, names
    return person.get(f"/jobs/{job_id}/files/result.{fmt}").content


def _quick(person, sql: str) -> pd.DataFrame:
    body = ok(person.post(f"/datasets/{SIM}/sql", json={"sql": sql}))
    return pd.DataFrame(body["rows"], columns=body["columns"])


def test_a_sql_job_gives_the_quick_answer_in_every_format(site) -> None:
    alice = site["alice"]
    want = _quick(alice, TOP)
    jobs = {
        fmt: _submit(alice, {"kind": "sql", "sim": SIM, "sql": TOP, "format": fmt})
        for fmt in ("parquet", "csv", "hdf5")
    }
    got = pq.read_table(io.BytesIO(_result(alice, jobs["parquet"], "parquet"))).to_pandas()
    pd.testing.assert_frame_equal(got, want)
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(_result(alice, jobs["csv"], "csv"))), want)
    with h5py.File(io.BytesIO(_result(alice, jobs["hdf5"], "hdf5")), "r") as f:
        assert list(f.attrs["columns"]) == list(want.columns) and f.attrs["sql"] == TOP
        for col in want.columns:
            np.testing.assert_array_equal(f[col][...], want[col].to_numpy())


def test_a_sql_job_has_no_row_cap_and_can_save_into_mydb(site, demo_data: Path) -> None:
    alice = site["alice"]
    r = alice.post(f"/datasets/{SIM}/sql", json={"sql": ALL})
    assert r.status_code == 413 and '"kind": "sql"' in r.json()["detail"]  # the quick path's cap: 1000 rows
    everything = pd.read_parquet(demo_data / SIM / "halos.parquet", columns=["id", "snap", "mass"])
    job = _submit(alice, {"kind": "sql", "dataset": SIM, "sql": ALL, "into": "all_halos"})  # dataset = sim
    got = pq.read_table(io.BytesIO(_result(alice, job, "parquet"))).to_pandas()
    assert len(got) == len(everything) > 1000
    np.testing.assert_array_equal(got.id.to_numpy(), np.sort(everything.id.to_numpy()))
    table = ok(alice.get("/mydb/tables/all_halos"))
    assert table["rows"] == len(everything)
    # MyDB SQL as a job (no sim): the owner's table joined with the catalog, past the row cap
    job = _submit(
        alice,
        {
            "kind": "sql",
            "sql": f"SELECT a.id, h.x FROM mydb.all_halos a JOIN {SIM}.halos h USING (id) ORDER BY a.id",
            "format": "csv",
        },
    )
    got = pd.read_csv(io.BytesIO(_result(alice, job, "csv")))
    assert len(got) == len(everything) and list(got.columns) == ["id", "x"]
    # ... run with the owner's access: bob's job cannot read alice's unshared table
    job = _submit(site["bob"], {"kind": "sql", "sql": "SELECT * FROM alice.all_halos"})
    info = wait_job(site["bob"], job)
    assert info["status"] == "failed" and "does not exist" in info["error"], info
    ok(alice.delete("/mydb/tables/all_halos"))


def test_bad_sql_jobs_are_refused_with_a_4xx(site) -> None:
    alice = site["alice"]
    cases = [
        ({"kind": "sql", "sim": SIM, "sql": "DELETE FROM halos"}, 422, "one SELECT"),
        ({"kind": "sql", "sim": SIM, "sql": "SELECT 1; SELECT 2"}, 422, "one SELECT"),
        ({"kind": "sql", "sim": SIM, "sql": "SELEKT"}, 422, "does not parse"),
        ({"kind": "sql", "sim": "nosuchsim", "sql": "SELECT 1"}, 404, "nosuchsim"),
        ({"kind": "sql", "sim": SIM, "sql": "SELECT 1", "into": "../escape"}, 422, "table name"),
        ({"kind": "sql", "sim": SIM, "sql": "SELECT 1", "format": "xlsx"}, 422, "format"),
        ({"kind": "sql", "sim": SIM, "sql": ""}, 422, "sql"),
        ({"kind": "sql", "sim": SIM, "sql": "SELECT 1", "rows": 5}, 422, "rows"),
        ({"kind": "sql", "sim": SIM, "sql": "SELECT 1", "points": [[0, 0, 0]]}, 422, "take no points"),
    ]
    for body, status, words in cases:
        r = alice.post("/jobs", json=body)
        assert r.status_code == status and words in r.text, (body, r.status_code, r.text[:300])
    import httpx

    with httpx.Client(base_url=site["url"] + "/api/v1") as public:
        r = public.post("/jobs", json={"kind": "sql", "sim": SIM, "sql": "SELECT 1"})
        assert r.status_code in (401, 403), r.text


def test_the_labclient_sql_submit_command_runs_a_job(site, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABSERVICE_")}
    env.update(
        LABSERVICE_URL=site["url"], LABSERVICE_TOKEN=site["alice"].token, XDG_CONFIG_HOME=str(tmp_path)
    )
    for out in ("all.parquet", "all.csv"):
        done = subprocess.run([str(LABCLIENT), "sql", SIM, ALL, "--submit", "-o", out], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stderr
    want = pd.read_parquet(tmp_path / "all.parquet")
    assert len(want) > 1000
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "all.csv"), want)
    done = subprocess.run([str(LABCLIENT), "sql", SIM, ALL, "--submit", "-o", "all.json"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and ".csv or .parquet" in done.stderr, done.stderr
