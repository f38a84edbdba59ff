"""TAP sync, VOSI and TAP_SCHEMA on a real server, with pyvo and astroquery from PyPI as the clients."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from astropy.io.votable import parse_single_table

from tests.plugin.cosmo import SIM
from tests.tap.conftest import MAX_ROWS, TIMEOUT

pyvo = pytest.importorskip("pyvo")
# pyvo and astroquery read streamed responses and leave their sockets to the garbage collector
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")


# 79 halos to the 6th power: about 2e11 rows to test (no statistic can skip them), far past the 2 s limit
HEAVY = (f"SELECT COUNT(*) AS n FROM {SIM}.halos AS h1, {SIM}.halos AS h2, {SIM}.halos AS h3, {SIM}.halos AS h4, "
         f"{SIM}.halos AS h5, {SIM}.halos AS h6 WHERE MOD(h1.id + h2.id + h3.id + h4.id + h5.id + h6.id, 7) = 3")


def _votable(body: bytes):
    return parse_single_table(io.BytesIO(body)).to_table()


def _status(body: bytes) -> tuple[str, str]:
    from astropy.io.votable import parse

    vot = parse(io.BytesIO(body))
    infos = [i for r in vot.resources for i in r.infos if i.name == "QUERY_STATUS"]
    return infos[-1].value, infos[-1].content or ""


@pytest.fixture(scope="module")
def tap(tap_url: str):
    return pyvo.dal.TAPService(tap_url)


@pytest.fixture(scope="module")
def last_snap(local) -> int:
    return int(local.halos["snap"].max())


def test_run_sync_top_equals_the_sql_endpoint(tap, server, last_snap):
    got = tap.run_sync(f"SELECT TOP 10 id, mass FROM {SIM}.halos WHERE snap = {last_snap} ORDER BY mass DESC")
    table = got.to_table()
    sql = f"SELECT id, mass FROM halos WHERE snap = {last_snap} ORDER BY mass DESC LIMIT 10"
    r = httpx.post(f"{server.url}/api/v1/datasets/{SIM}/sql", params={"format": "csv"}, json={"sql": sql})
    assert r.status_code == 200, r.text
    want = pd.read_csv(io.StringIO(r.text))
    assert len(table) == len(want) == 10
    np.testing.assert_array_equal(np.asarray(table["id"]), want["id"].to_numpy())
    np.testing.assert_array_equal(np.asarray(table["mass"]), want["mass"].to_numpy())
    assert str(table["mass"].unit) in ("Msun / h", "Msun/h")
    assert got.fieldname_with_ucd("phys.mass") == "mass"


def test_main_branch_join_equals_the_tree_endpoint(tap, server, local):
    z0 = local.halos[local.halos["snap"] == local.halos["snap"].max()]
    hid = int(z0.loc[(z0["mainLeafId"] - z0["id"]).idxmax(), "id"])
    adql = (f"SELECT t.id, t.snap, t.mass FROM {SIM}.halos AS d JOIN {SIM}.trees AS t "
            f"ON t.id BETWEEN d.id AND d.mainLeafId WHERE d.id = {hid} ORDER BY t.id")
    got = tap.run_sync(adql).to_table()
    r = httpx.get(f"{server.url}/api/v1/datasets/{SIM}/halos/{hid}/tree",
                  params={"kind": "main-branch", "format": "csv"})
    assert r.status_code == 200, r.text
    want = pd.read_csv(io.StringIO(r.text)).sort_values("id")
    assert len(got) == len(want) >= 2
    for col in ("id", "snap", "mass"):
        np.testing.assert_array_equal(np.asarray(got[col]), want[col].to_numpy(), err_msg=col)


def test_tables_list_every_table_with_units(tap):
    names = set(tap.tables.keys())
    assert {f"{SIM}.halos", f"{SIM}.trees", f"{SIM}.snapshots", "TAP_SCHEMA.columns"} <= names
    cols = {c.name: c for c in tap.tables[f"{SIM}.halos"].columns}
    assert str(cols["mass"].unit) == "Msun/h" and cols["mass"].ucd == "phys.mass"
    assert str(cols["x"].unit) == "Mpc/h" and cols["x"].ucd == "pos.cartesian.x"
    assert cols["vz"].unit == "km/s" and cols["mass"].description
    assert str({c.name: c for c in tap.tables[f"{SIM}.snapshots"].columns}["time"].unit) == "Gyr"


def test_tap_schema_is_queryable_through_tap(tap):
    rows = tap.run_sync(
        "SELECT column_name, unit, ucd FROM TAP_SCHEMA.columns "
        f"WHERE table_name = '{SIM}.halos' AND column_name IN ('mass', 'x', 'y', 'z') ORDER BY column_name"
    ).to_table()
    got = {r["column_name"]: (r["unit"], r["ucd"]) for r in rows}
    assert got == {"mass": ("Msun/h", "phys.mass"), "x": ("Mpc/h", "pos.cartesian.x"),
                   "y": ("Mpc/h", "pos.cartesian.y"), "z": ("Mpc/h", "pos.cartesian.z")}
    tables = tap.run_sync("SELECT table_name FROM TAP_SCHEMA.tables").to_table()
    assert f"{SIM}.trees" in set(tables["table_name"])
    keys = tap.run_sync("SELECT from_table, target_table FROM TAP_SCHEMA.keys").to_table()
    assert (f"{SIM}.trees", f"{SIM}.halos") in {(r["from_table"], r["target_table"]) for r in keys}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "votable"])
def test_formats_get_and_post_with_any_case(tap_url, fmt):
    q = f"SELECT TOP 7 id, x FROM {SIM}.halos ORDER BY id"
    a = httpx.get(f"{tap_url}/sync", params={"lang": "ADQL", "query": q, "format": fmt})
    b = httpx.post(f"{tap_url}/sync", data={"Lang": "ADQL", "Query": q, "FORMAT": fmt})
    assert a.status_code == b.status_code == 200 and a.content == b.content
    if fmt == "csv":
        frame = pd.read_csv(io.StringIO(a.text))
    elif fmt == "parquet":
        frame = pd.read_parquet(io.BytesIO(a.content))
    else:
        frame = _votable(a.content).to_pandas()
    assert list(frame["id"]) == list(range(7)) and list(frame.columns) == ["id", "x"]


def test_astroquery_tapplus_sync_and_tables(tap_url):
    import gc

    from astroquery.utils.tap.core import TapPlus

    tap = TapPlus(url=tap_url)
    job = tap.launch_job(f"SELECT TOP 5 id, mass FROM {SIM}.halos ORDER BY id")
    table = job.get_results()
    assert list(table["id"]) == [0, 1, 2, 3, 4]
    assert f"{SIM}.halos" in {t.name for t in tap.load_tables()}
    del tap, job
    gc.collect()  # the leaked sockets close here, under this test's filters


# -- bad input: each answers a VOTable error document with a 4xx -------------------------------------
@pytest.mark.parametrize(
    ("query", "status", "needle"),
    [
        ("SELEC id FROM apisim.halos", 422, "syntax error"),
        (f"SELECT id, masss FROM {SIM}.halos", 422, "Did you mean 'mass'"),
        (f"SELECT id FROM {SIM}.halo", 422, f"Did you mean '{SIM}.halos'"),
        ("SELECT id FROM halos", 422, "qualify every table with its simulation, e.g. cosmo64.halos"),
        (f"SELECT id FROM {SIM}.halos WHERE 1 = CONTAINS(POINT('ICRS', x, y), CIRCLE('ICRS', 10, 10, 1))", 422,
         "periodic simulation box"),
        ("", 422, "QUERY is empty"),
    ],
)
def test_bad_queries_answer_an_error_votable(tap_url, query, status, needle):
    r = httpx.get(f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": query})
    assert r.status_code == status, r.text
    value, message = _status(r.content)
    assert value == "ERROR" and needle in message, message


def test_pyvo_raises_with_the_parser_message(tap):
    with pytest.raises(pyvo.dal.DALQueryError, match="Did you mean 'mass'"):
        tap.run_sync(f"SELECT masss FROM {SIM}.halos")


def test_maxrec_over_the_cap_is_flagged_overflow(tap_url, tap):
    q = f"SELECT id FROM {SIM}.halos ORDER BY id"
    r = httpx.get(f"{tap_url}/sync", params={"QUERY": q, "MAXREC": str(MAX_ROWS * 10)})
    assert r.status_code == 200
    assert len(_votable(r.content)) == MAX_ROWS and _status(r.content)[0] == "OVERFLOW"
    r = httpx.get(f"{tap_url}/sync", params={"QUERY": q, "MAXREC": "5"})
    assert len(_votable(r.content)) == 5 and _status(r.content)[0] == "OVERFLOW"
    r = httpx.get(f"{tap_url}/sync", params={"QUERY": f"SELECT TOP 3 id FROM {SIM}.halos", "MAXREC": "5"})
    assert len(_votable(r.content)) == 3 and _status(r.content)[0] == "OK"
    with pytest.warns(pyvo.dal.exceptions.DALOverflowWarning, match="truncated at 50 records by service limits"):
        got = tap.run_sync(q, maxrec=MAX_ROWS * 10)
    assert len(got) == MAX_ROWS and got.query_status == "OVERFLOW"
    assert len(tap.run_sync(q, maxrec=4)) == 4  # cut where the caller asked: pyvo does not warn
    r = httpx.get(f"{tap_url}/sync", params={"QUERY": q, "MAXREC": "-1"})
    assert r.status_code == 422 and "MAXREC" in _status(r.content)[1]


def test_a_query_past_the_time_limit_is_aborted_with_an_error_document(tap_url):
    heavy = HEAVY
    t0 = time.monotonic()
    r = httpx.get(f"{tap_url}/sync", params={"QUERY": heavy}, timeout=60)
    assert time.monotonic() - t0 < TIMEOUT + 15
    assert r.status_code == 413
    value, message = _status(r.content)
    assert value == "ERROR" and f"longer than {TIMEOUT:g} s" in message


def test_other_bad_parameters_are_4xx(tap_url):
    q = f"SELECT TOP 1 id FROM {SIM}.halos"
    assert httpx.get(f"{tap_url}/sync", params={"QUERY": q, "LANG": "SQL"}).status_code == 422
    assert httpx.get(f"{tap_url}/sync", params={"QUERY": q, "FORMAT": "fits"}).status_code == 422
    assert httpx.get(f"{tap_url}/sync", params={"LANG": "ADQL"}).status_code == 422
    assert httpx.post(f"{tap_url}/sync", content=b"\xff\x00", headers={"content-type": "multipart/form-data"}
                      ).status_code < 500
    assert httpx.get(f"{tap_url}/tables/{SIM}.halo").status_code == 404


def test_vosi_capabilities_and_availability(tap, tap_url):
    cap = tap.get_tap_capability()
    assert cap.get_adql() is not None
    assert tap.hardlimit == MAX_ROWS
    r = httpx.get(f"{tap_url}/availability")
    assert r.status_code == 200 and "<vosi:available>true</vosi:available>" in r.text
