"""TAP async (UWS 1.1) on a real server and a real Dask cluster, with pyvo from PyPI as the client."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.plugin.cosmo import SIM
from tests.tap.test_sync import HEAVY

pyvo = pytest.importorskip("pyvo")
pytestmark = [
    pytest.mark.dask,
    # pyvo reads streamed responses and leaves their sockets to the garbage collector: the client's habit
    pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"),
]
UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
TOP5 = f"SELECT TOP 5 id, mass FROM {SIM}.halos ORDER BY mass DESC"


@pytest.fixture(scope="module")
def tap(tap_url, session):
    return pyvo.dal.TAPService(tap_url, session=session)


@pytest.fixture
def http(tap_url, tap_token):
    with httpx.Client(base_url=tap_url, headers={"Authorization": f"Bearer {tap_token}"}, timeout=60) as c:
        yield c


def _phase(http, job_id: str) -> str:
    r = http.get(f"/async/{job_id}/phase")
    assert r.status_code == 200
    return r.text


def _wait_final(job, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job.phase in ("COMPLETED", "ERROR", "ABORTED"):
            return job.phase
        job.wait(phases={"COMPLETED", "ERROR", "ABORTED"}, timeout=10)
    raise TimeoutError(job.url)


def test_run_async_equals_run_sync(tap):
    got = tap.run_async(TOP5).to_table()
    want = tap.run_sync(TOP5).to_table()
    assert list(got["id"]) == list(want["id"]) and list(got["mass"]) == list(want["mass"])
    assert str(got["mass"].unit) == str(want["mass"].unit)


def test_submit_job_through_each_phase(tap, http):
    job = tap.submit_job(TOP5, maxrec=3)
    assert job.phase == "PENDING"
    assert job.execution_duration.to_value("s") > 0 and job.destruction is not None and job.quote is not None
    assert job.query == TOP5
    job.execution_duration = 30
    assert job.execution_duration.to_value("s") == 30
    params = http.get(f"/async/{job.job_id}/parameters")
    assert params.status_code == 200 and "maxrec" in params.text
    seen = {job.phase}
    job.run()
    seen.add(job.phase)
    assert _wait_final(job) == "COMPLETED"
    seen.add(job.phase)
    assert seen >= {"PENDING", "COMPLETED"} and seen & {"QUEUED", "EXECUTING", "COMPLETED"}
    result = job.fetch_result()
    assert len(result) == 3 and result.query_status == "OVERFLOW"  # cut at MAXREC: flagged
    assert job.result_uri.endswith(f"/async/{job.job_id}/results/result")
    listed = ET.fromstring(http.get("/async").content)
    assert job.job_id in {ref.get("id") for ref in listed.iter(f"{UWS}jobref")}
    job.delete()
    assert http.get(f"/async/{job.job_id}").status_code == 404


def test_abort_pending_and_running_jobs(tap, http):
    pending = tap.submit_job(TOP5)
    pending.abort()
    assert pending.phase == "ABORTED"
    running = tap.submit_job(HEAVY)
    running.execution_duration = 5
    running.run()
    running.abort()
    assert _wait_final(running) == "ABORTED"
    r = http.get(f"/async/{running.job_id}/results/result")
    assert r.status_code == 422 and "ABORTED" in r.json()["detail"]


def test_bad_queries_end_in_error_with_the_message(tap, http):
    job = tap.submit_job(f"SELECT masss FROM {SIM}.halos")
    job.run()
    assert _wait_final(job) == "ERROR"
    with pytest.raises(pyvo.dal.DALQueryError, match="Did you mean 'mass'"):
        job.raise_if_error()
    r = http.get(f"/async/{job.job_id}/error")
    assert r.status_code == 200 and 'value="ERROR"' in r.text and "masss" in r.text
    with pytest.raises(pyvo.dal.DALQueryError, match="periodic simulation box"):
        tap.run_async(f"SELECT id FROM {SIM}.halos WHERE 1 = CONTAINS(POINT('', x, y), CIRCLE('', 1, 2, 3))")


def test_an_async_query_past_its_execution_duration_is_aborted_with_an_error(tap, http):
    job = tap.submit_job(HEAVY)
    job.execution_duration = 2
    job.run()
    assert _wait_final(job, timeout=120) == "ERROR"
    r = http.get(f"/async/{job.job_id}/error")
    assert "longer than 2 s" in r.text and 'value="ERROR"' in r.text


def test_nonsensical_phases_are_http_errors(tap, http):
    job = tap.submit_job(TOP5)
    for bad in ("SUSPEND", "FLY", ""):
        r = http.post(f"/async/{job.job_id}/phase", data={"PHASE": bad})
        assert 400 <= r.status_code < 500, r.text
    assert http.get(f"/async/{job.job_id}/error").status_code == 422  # no error while PENDING
    job.run()
    assert _wait_final(job) == "COMPLETED"
    for bad in ("RUN", "ABORT"):
        r = http.post(f"/async/{job.job_id}/phase", data={"PHASE": bad})
        assert r.status_code == 422 and "COMPLETED" in r.json()["detail"], r.text
    r = http.post(f"/async/{job.job_id}/executionduration", data={"EXECUTIONDURATION": "5"})
    assert r.status_code == 422 and "PENDING" in r.json()["detail"]
    r = http.post(f"/async/{job.job_id}/executionduration", data={"EXECUTIONDURATION": "soon"})
    assert r.status_code == 422
    assert http.get(f"/async/{job.job_id}/nonsense").status_code == 422
    assert http.get("/async/0123456789abcdef").status_code == 404


def test_wait_blocks_while_the_phase_stays(http):
    r = http.post("/async", data={"QUERY": TOP5, "LANG": "ADQL"}, follow_redirects=False)
    assert r.status_code == 303
    job_url = r.headers["location"]
    job_id = job_url.rsplit("/", 1)[1]
    t0 = time.monotonic()
    doc = http.get(f"/async/{job_id}", params={"WAIT": "1.5"})
    assert 1.4 <= time.monotonic() - t0 < 10 and ET.fromstring(doc.content).find(f"{UWS}phase").text == "PENDING"
    r = http.post(f"/async/{job_id}", data={"PHASE": "RUN"}, follow_redirects=False)
    assert r.status_code == 303
    deadline = time.monotonic() + 90
    phase = "QUEUED"
    while phase in ("PENDING", "QUEUED", "EXECUTING") and time.monotonic() < deadline:
        phase = ET.fromstring(http.get(f"/async/{job_id}", params={"WAIT": "10"}).content).find(f"{UWS}phase").text
    assert phase == "COMPLETED"
    t0 = time.monotonic()
    http.get(f"/async/{job_id}", params={"WAIT": "30"})
    assert time.monotonic() - t0 < 5  # a finished job answers at once
    r = http.post(f"/async/{job_id}", data={"ACTION": "DELETE"}, follow_redirects=False)
    assert r.status_code == 303 and http.get(f"/async/{job_id}").status_code == 404


def test_async_needs_a_token_that_allows_jobs(tap_url):
    r = httpx.post(f"{tap_url}/async", data={"QUERY": TOP5})
    assert r.status_code == 403 and "token" in r.json()["detail"]
    assert httpx.get(f"{tap_url}/async").status_code == 403


def test_pyvo_async_tap_job_full_round_trip(tap_url, session):
    job = pyvo.dal.AsyncTAPJob.create(tap_url, TOP5, session=session)
    with job:
        assert job.phase == "PENDING"
        job.run().wait(timeout=120)
        job.raise_if_error()
        assert list(job.fetch_result().to_table()["id"]) == list(
            pyvo.dal.TAPService(tap_url).run_sync(TOP5).to_table()["id"])
    assert httpx.get(job._job.jobid and f"{tap_url}/async/{job._job.jobid}",
                     headers=session.headers).status_code == 404  # deleted on leaving the block


def test_destruction_is_kept_and_a_past_one_destroys_the_job(tap, http):
    import datetime as dt

    job = tap.submit_job(TOP5)
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    job.destruction = soon
    assert job.destruction.unix == pytest.approx(soon.timestamp(), abs=1)
    r = http.post(f"/async/{job.job_id}/destruction", data={"DESTRUCTION": "yesterday"})
    assert r.status_code == 422 and "ISO 8601" in r.json()["detail"]
    r = http.post(f"/async/{job.job_id}/destruction", data={"DESTRUCTION": "2001-01-01T00:00:00Z"},
                  follow_redirects=False)
    assert r.status_code == 303
    assert http.get(f"/async/{job.job_id}").status_code == 404
