"""The collaboration pages (Groups, My tables, SQL, the share and link panel of My jobs), over HTTP and in
headless Chromium against the real server of the portal tests, with two users: alice and bob.

Each browser test saves screenshots of what it checked under ``$LABSERVICE_TEST_OUTPUT/portal`` (or the
pytest base temp folder), named ``collab-*.png``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from labservice.devserver import ServerThread
from labservice.settings import Settings
from tests.plugin.portal import TOKEN_LIMITS, set_token

pytestmark = pytest.mark.dask  # the shared server runs jobs on a real Dask cluster

NEW_PAGES = ["/groups", "/tables", "/sql", "/sql?sim=mydb", "/sql?sim=cosmo64"]
NAV = ["/sql", "/tables", "/groups", "/jobs"]


def assert_secure(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"


# -- the pages over HTTP --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", NEW_PAGES)
def test_new_page_is_served_with_security_headers_and_no_inline_script(http, path):
    r = http.get(path)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/html")
    assert_secure(r)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text)
    assert " style=" not in r.text and "<style" not in r.text
    assert 'src="/static/js/collab.js"' in r.text


@pytest.mark.parametrize("path", ["/", "/jobs", "/groups", "/datasets/cosmo64"])
def test_nav_links_to_every_collaboration_page(http, path):
    nav = re.search(r"<nav>(.*?)</nav>", http.get(path).text, re.S).group(1)
    assert re.findall(r'href="([^"]+)"', nav) == ["/", *NAV, "/docs"]


def test_sql_page_offers_each_simulation_and_mydb(http):
    html = unescape(http.get("/sql?sim=cosmo64").text)
    options = re.findall(r'<option value="([^"]+)"', html)
    assert options == ["cosmo64", "mydb"]
    assert re.search(r'<option value="cosmo64" data-example="[^"]*" selected>', html)
    assert "FROM halos WHERE snap = 30" in html  # the example names the last snapshot
    assert "FROM mydb.my_table" in unescape(http.get("/sql?sim=mydb").text).split("</textarea>")[0]
    assert 'href="/sql?sim=cosmo64"' in http.get("/datasets/cosmo64").text  # the simulation page links here


def test_sql_page_for_an_unknown_simulation_is_a_404_page(http):
    r = http.get("/sql?sim=cosmo46")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "unknown simulation &#39;cosmo46&#39;" in r.text and "cosmo64" in r.text


@pytest.mark.parametrize("name", ["collab", "groups", "tables", "sql", "jobs"])
def test_page_scripts_are_served_with_the_headers(http, name):
    r = http.get(f"/static/js/{name}.js")
    assert r.status_code == 200 and len(r.content) > 1000
    assert_secure(r)


# -- in Chromium --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alice(make_token) -> str:
    return make_token("alice", TOKEN_LIMITS)  # a token without --user gets a user of its own name


@pytest.fixture(scope="module")
def bob(make_token) -> str:
    return make_token("bob", TOKEN_LIMITS)


@pytest.fixture
def api(server: ServerThread) -> Iterator[Any]:
    """``api(token)``: an HTTP client on /api/v1 sending that token (None: no token)."""
    clients: list[httpx.Client] = []

    def make(token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        clients.append(httpx.Client(base_url=server.url + "/api/v1", headers=headers, timeout=60))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


@pytest.fixture(scope="module")
def team(server: ServerThread, alice: str, bob: str) -> str:
    """A group alice owns with bob as a member, made through the API."""
    with httpx.Client(base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {alice}"}) as c:
        assert c.post("/groups", json={"name": "team", "description": "alice and bob"}).status_code == 201
        assert c.put("/groups/team/members/bob", json={"role": "member"}).status_code == 200
    return "team"


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Any:
    """``shot(tab, name)``: a full-page screenshot ``collab-NAME.png`` in the test output folder."""
    root = os.environ.get("LABSERVICE_TEST_OUTPUT")
    folder = (
        Path(root) / "portal"
        if root
        else request.config._tmp_path_factory.getbasetemp() / "portal-screenshots"
    )  # type: ignore[attr-defined]
    folder.mkdir(parents=True, exist_ok=True)

    def take(tab: Any, name: str) -> Path:
        path = folder / f"collab-{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        return path

    return take


def cells(tab: Any, selector: str) -> list[list[str]]:
    return tab.eval_on_selector_all(
        f"{selector} tbody tr",
        "trs => trs.map(tr => [...tr.cells].map(td => { const s = td.querySelector('select');"
        " return s ? s.value : td.innerText.trim(); }))",
    )


@pytest.mark.browser
def test_groups_page_creates_a_group_and_manages_members(page, alice, bob, api, shot):
    set_token(page, alice)
    page.goto("/groups")
    page.wait_for_selector("#me-who:has-text('You are alice.')")
    page.fill("#group-name", "vortex")
    page.fill("#group-description", "vortex hunters")
    page.click("#group-create")
    page.wait_for_selector("#groups-table tr[data-group='vortex']")
    page.wait_for_selector("#group-detail[data-group='vortex']")
    assert cells(page, "#members-table") == [["alice (you)", "owner", ""]]

    page.fill("#member-user", "bob")
    page.click("#member-add")
    page.wait_for_selector("#members-table tr[data-user='bob']")
    page.select_option("#members-table tr[data-user='bob'] select.role", "admin")
    page.wait_for_selector("#group-detail[data-changed='bob']")  # the page re-read the group after the PUT
    members = {m["user"]: m["role"] for m in api(alice).get("/groups/vortex").json()["members"]}
    assert members == {"alice": "owner", "bob": "admin"}  # what the page did, the API kept

    # The API's refusals are shown in its own words: an unknown user, and the last owner leaving.
    page.fill("#member-user", "nobody")
    page.click("#member-add")
    shown = page.wait_for_selector("#detail-error:not([hidden])").inner_text()
    assert shown == api(alice).put("/groups/vortex/members/nobody", json={"role": "member"}).json()["detail"]
    assert "nobody" in shown
    page.click("#group-leave")
    page.wait_for_selector("#detail-error:has-text('last owner')")
    shot(page, "groups")

    set_token(page, bob)  # bob sees the group with his role, and may leave it
    page.goto("/groups")
    page.wait_for_selector("#groups-table tr[data-group='vortex']")
    assert page.inner_text("#groups-table tr[data-group='vortex'] td:nth-child(3)") == "admin"
    page.click("#groups-table tr[data-group='vortex'] button.open")
    page.wait_for_selector("#group-detail[data-group='vortex']")
    assert page.is_hidden("#group-delete")  # only owners delete
    page.click("#group-leave")
    page.wait_for_selector("#groups-table tr[data-group='vortex']", state="detached")
    assert page.is_hidden("#group-detail")
    assert "vortex" not in {g["name"] for g in api(bob).get("/groups").json()["groups"]}

    set_token(page, alice)  # the owner deletes it
    page.goto("/groups")
    page.click("#groups-table tr[data-group='vortex'] button.open")
    page.on("dialog", lambda d: d.accept())
    page.click("#group-delete")
    page.wait_for_selector("#groups-table tr[data-group='vortex']", state="detached")
    assert api(alice).get("/groups/vortex").status_code == 404


def sensors_frame(n: int = 30) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(21)
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 6.28, n).round(6),
            "y": rng.uniform(0, 6.28, n).round(6),
            "z": np.arange(n, dtype=float),
            "label": [f"s{i}" for i in range(n)],
        }
    )


@pytest.mark.browser
def test_tables_page_uploads_previews_downloads_and_shares(page, alice, bob, team, api, shot, tmp_path):
    frame = sensors_frame()
    path = tmp_path / "Sensors.csv"
    frame.to_csv(path, index=False)
    set_token(page, alice)
    page.goto("/tables")
    page.wait_for_selector("#mydb-usage:has-text('MyDB quota')")
    page.set_input_files("#upload-file", str(path))
    assert page.input_value("#upload-name") == "sensors"  # from the file name, made a valid table name
    page.click("#upload-submit")
    page.wait_for_selector("#upload-status:has-text('Saved Sensors.csv as mydb.sensors (30 rows)')")
    row = "#tables-table tr[data-table='mydb.sensors']"
    page.wait_for_selector(row)

    page.click(f"{row} button.preview")
    page.wait_for_selector("#preview[data-table='mydb.sensors']:not([hidden])")
    header = page.eval_on_selector_all("#preview-table thead th", "ths => ths.map(t => t.textContent)")
    assert header == list(frame.columns)
    shown = pd.DataFrame(cells(page, "#preview-table"), columns=header)
    assert len(shown) == 20 and "first 20 of 30 rows" in page.inner_text("#preview-summary")
    assert shown["label"].tolist() == frame["label"][:20].tolist()
    assert shown["x"].astype(float).tolist() == frame["x"][:20].tolist()

    for kind, read in (("csv", pd.read_csv), ("parquet", pd.read_parquet)):
        with page.expect_download() as info:
            page.click(f"{row} button.download-{kind}")
        pd.testing.assert_frame_equal(read(info.value.path()), frame, check_dtype=False)

    halos = tmp_path / "halos_z0.parquet"  # a Parquet upload keeps its column types
    frame.assign(n=range(len(frame))).to_parquet(halos, index=False)
    page.set_input_files("#upload-file", str(halos))
    page.fill("#upload-name", "halos_z0")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-status:has-text('as mydb.halos_z0 (30 rows)')")
    info = api(alice).get("/mydb/tables/halos_z0").json()
    assert {c["name"]: c["type"] for c in info["columns"]}["n"] in ("int64", "bigint", "BIGINT")

    page.select_option(f"{row} select.share-group", team)
    page.click(f"{row} button.share")
    page.wait_for_selector(f"{row} .chip[data-group='{team}']")
    mine = {t["ref"]: t for t in api(bob).get("/mydb/tables").json()["tables"]}
    assert mine["alice.sensors"]["shared"] is True

    # A server refusal is shown in its words: a name that is not an identifier.
    page.set_input_files("#upload-file", str(path))
    page.fill("#upload-name", "Bad-Name")
    page.click("#upload-submit")
    shown_error = page.wait_for_selector("#error:not([hidden])").inner_text()
    expected = api(alice).put(
        "/mydb/tables/Bad-Name", content=path.read_bytes(), headers={"Content-Type": "text/csv"}
    )
    assert expected.status_code in (400, 404, 422) and shown_error == expected.json()["detail"]
    shot(page, "tables-alice")

    set_token(page, bob)  # bob sees it marked as shared, reads it, and cannot change it
    page.goto("/tables")
    theirs = "#tables-table tr[data-table='alice.sensors'][data-shared='true']"
    page.wait_for_selector(theirs)
    assert "shared with me" in page.inner_text(f"{theirs} td:nth-child(1)")
    assert page.inner_text(f"{theirs} td:nth-child(2)") == "alice"
    assert page.locator(f"{theirs} button.delete").count() == 0
    assert page.locator(f"{theirs} select.share-group").count() == 0
    page.click(f"{theirs} button.preview")
    page.wait_for_selector("#preview[data-table='alice.sensors']:not([hidden])")
    assert len(cells(page, "#preview-table")) == 20
    shot(page, "tables-bob")

    set_token(page, alice)  # unsharing takes effect at once
    page.goto("/tables")
    page.click(f"{row} .chip[data-group='{team}'] button.unshare")
    page.wait_for_selector(f"{row} .chip", state="detached")
    assert "alice.sensors" not in {t["ref"] for t in api(bob).get("/mydb/tables").json()["tables"]}
    page.on("dialog", lambda d: d.accept())
    page.click(f"{row} button.delete")
    page.wait_for_selector(row, state="detached")
    assert api(alice).get("/mydb/tables/sensors").status_code == 404


TOP5 = "SELECT id, mass FROM halos WHERE snap = 30 ORDER BY mass DESC LIMIT 5"


@pytest.mark.browser
def test_sql_quick_shows_rows_saves_into_mydb_and_explains_the_cap(page, alice, api, shot):
    expected = api(alice).post("/datasets/cosmo64/sql", json={"sql": TOP5}).json()
    set_token(page, alice)
    page.goto("/")
    page.click("nav a:has-text('SQL')")
    page.wait_for_url("**/sql")
    page.fill("#sql-text", TOP5)
    page.click("#sql-quick")
    page.wait_for_selector("#sql-result:not([hidden])")
    header = page.eval_on_selector_all("#sql-table thead th", "ths => ths.map(t => t.textContent)")
    assert header == ["id", "mass"]
    rows = cells(page, "#sql-table")
    assert [int(r[0]) for r in rows] == [r["id"] for r in expected["rows"]]
    assert [float(r[1]) for r in rows] == pytest.approx([r["mass"] for r in expected["rows"]], rel=1e-9)
    assert page.inner_text("#sql-summary") == "5 rows."

    page.fill("#sql-into", "top5")  # the same query, kept in MyDB
    page.click("#sql-quick")
    page.wait_for_selector("#sql-status:has-text('Saved as mydb.top5 (5 rows)')")
    assert api(alice).get("/mydb/tables/top5").json()["rows"] == 5

    page.select_option("#sql-target", "mydb")  # SQL over MyDB reads it back
    assert page.input_value("#sql-text") == TOP5  # a query of one's own stays when the target changes
    page.fill("#sql-into", "")
    page.fill("#sql-text", "SELECT count(*) AS n, max(mass) AS top FROM mydb.top5")
    page.click("#sql-quick")
    page.wait_for_selector("#sql-summary:has-text('1 row.')")
    assert cells(page, "#sql-table")[0][0] == "5"

    # Over the quick path's cap: the 413's detail, which says how to submit it as a job, word for word.
    big = "SELECT a.id FROM halos a, halos b"
    page.select_option("#sql-target", "cosmo64")
    page.fill("#sql-text", big)
    page.click("#sql-quick")
    shown = page.wait_for_selector("#error:not([hidden])").inner_text()
    answer = api(alice).post("/datasets/cosmo64/sql", json={"sql": big})
    assert answer.status_code == 413 and shown == answer.json()["detail"]
    assert "job" in shown
    shot(page, "sql-quick")


@pytest.mark.browser
def test_sql_submit_runs_a_job_that_my_jobs_shows_and_downloads(page, alice, api, shot):
    set_token(page, alice)
    page.goto("/sql?sim=cosmo64")
    page.fill("#sql-text", TOP5)
    page.select_option("#sql-format", "csv")
    page.fill("#sql-into", "top5_job")
    page.click("#sql-submit")
    job_id = page.wait_for_selector("#sql-status[data-job]").get_attribute("data-job")
    assert "mydb.top5_job" in page.inner_text("#sql-status")
    page.click("#job-link")
    page.wait_for_url("**/jobs")
    row = f"#jobs-table tr[data-job='{job_id}']"
    page.wait_for_selector(f"{row}[data-status='done']", timeout=60_000)
    assert page.inner_text(f"{row} td:nth-child(2)") == "sql"
    assert page.inner_text(f"{row} td:nth-child(3)") == "cosmo64"
    with page.expect_download() as info:
        page.click(f"{row} button.download:has-text('result.csv')")
    got = pd.read_csv(info.value.path())
    expected = pd.DataFrame(api(alice).post("/datasets/cosmo64/sql", json={"sql": TOP5}).json()["rows"])
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert api(alice).get("/mydb/tables/top5_job").json()["rows"] == 5
    shot(page, "sql-job")


def finished_sql_job(client: httpx.Client) -> dict[str, Any]:
    """A done `sql` job of the client's user (its file: result.parquet), waited for at most 60 s."""
    import time

    job = client.post("/jobs", json={"kind": "sql", "sim": "cosmo64", "sql": TOP5, "format": "parquet"})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.get(f"/jobs/{job.json()['id']}").json()
        if body["status"] not in ("queued", "running"):
            assert body["status"] == "done", body
            return body
        time.sleep(0.2)
    raise AssertionError("the sql job did not finish within 60 s")


@pytest.mark.browser
def test_my_jobs_shares_a_job_and_makes_a_link_that_downloads_without_a_token(
    page, alice, bob, team, api, shot
):
    job = finished_sql_job(api(alice))
    row = f"#jobs-table tr[data-job='{job['id']}']"
    set_token(page, alice)
    page.wait_for_selector(f"{row}[data-status='done']")
    page.click(f"{row} button.share")
    page.wait_for_selector(f"#job-panel[data-job='{job['id']}']:not([hidden])")
    page.select_option("#share-group", team)
    page.click("#share-submit")
    page.wait_for_selector(f"#job-shares .chip[data-group='{team}']")
    offered = page.eval_on_selector_all("#share-group option", "os => os.map(o => o.value)")
    mine = {g["name"] for g in api(alice).get("/groups").json()["groups"]}
    assert set(offered) == mine - {team}  # the other groups alice is in
    assert page.is_visible("#share-all") == (not offered)
    assert api(alice).get(f"/jobs/{job['id']}").json()["shared_with"] == [team]
    assert api(bob).get(f"/jobs/{job['id']}").status_code == 200  # bob reads it now

    page.fill("#link-hours", "2")
    page.click("#link-create")
    url = page.wait_for_selector("#link-result:not([hidden]) #link-url").input_value()
    assert url.startswith(page.url.rsplit("/jobs", 1)[0] + "/api/v1/links/")
    page.wait_for_selector("#links-table:not([hidden]) tbody tr")
    shot(page, "jobs-share-link")

    with httpx.Client(timeout=60) as anyone:  # no token
        listing = anyone.get(url)
        assert listing.status_code == 200, listing.text
        (entry,) = [f for f in listing.json()["files"] if f["name"] == "result.parquet"]
        data = anyone.get(page.url.rsplit("/jobs", 1)[0] + entry["url"])
        assert data.status_code == 200
        expected = pd.DataFrame(api(alice).post("/datasets/cosmo64/sql", json={"sql": TOP5}).json()["rows"])
        pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(data.content)), expected, check_dtype=False)

        set_token(page, bob)  # bob finds it under "Shared with me", read-only
        shared = f"#shared-table tr[data-job='{job['id']}']"
        page.wait_for_selector(shared)
        assert page.inner_text(f"{shared} td:nth-child(5)") == "alice"
        assert page.inner_text(f"{shared} td:nth-child(6)") == team
        assert page.locator(f"{shared} button.share, {shared} button.cancel").count() == 0
        with page.expect_download() as info:
            page.click(f"{shared} button.download:has-text('result.parquet')")
        assert Path(info.value.path()).read_bytes() == data.content
        shot(page, "jobs-bob")

        set_token(page, alice)  # revoking the link and unsharing take effect at once
        page.click(f"{row} button.link")
        revoke = "#links-table tbody tr button.revoke"
        page.wait_for_selector(revoke)
        page.click(revoke)
        page.wait_for_selector("#links-table", state="hidden")
        assert anyone.get(url).status_code == 404
    page.click(f"#job-shares .chip[data-group='{team}'] button.unshare")
    page.wait_for_selector("#job-shares .chip", state="detached")
    assert api(bob).get(f"/jobs/{job['id']}").status_code == 404


# -- behind a path prefix (`labservice serve --root-path /lab`) ------------------------------------------------
PREFIX = "/lab"


@pytest.fixture(scope="module")
def prefixed(settings: Settings) -> Iterator[ServerThread]:
    """A second app on the same platform database and MyDB, served with root_path /lab (jobs off: the
    portal server's engine keeps the jobs)."""
    from labservice.app import create_app

    server = ServerThread(create_app(settings.model_copy(update={"jobs_enabled": False})))
    server.server.config.root_path = PREFIX  # uvicorn's --root-path
    server.start()
    yield server
    server.stop()


@pytest.mark.browser
def test_pages_and_their_api_calls_follow_the_root_path(browser, prefixed, alice, team, shot, tmp_path):
    """As behind a proxy that strips /lab: every request the pages make must carry the prefix."""
    outside: list[str] = []

    def proxy(route: Any) -> None:
        url = route.request.url
        path = url.split(prefixed.url, 1)[-1]
        if not path.startswith(PREFIX + "/"):
            outside.append(path)
            route.abort()
            return
        route.fulfill(response=route.fetch(url=prefixed.url + path[len(PREFIX) :]))

    context = browser.new_context(base_url=prefixed.url, accept_downloads=True)
    context.add_init_script(f"localStorage.setItem('labservice.token', {alice!r});")
    context.route(f"{prefixed.url}/**", proxy)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    try:
        tab.goto(PREFIX + "/groups")
        tab.wait_for_selector(f"#groups-table tr[data-group='{team}']")
        nav = tab.eval_on_selector_all("header a", "as => as.map(a => a.getAttribute('href'))")
        assert nav and all(h.startswith(PREFIX + "/") for h in nav), nav

        path = tmp_path / "pts.csv"
        pd.DataFrame({"x": [0.5, 1.5], "y": [1.0, 2.0], "z": [3.0, 4.0]}).to_csv(path, index=False)
        tab.goto(PREFIX + "/tables")
        tab.set_input_files("#upload-file", str(path))
        tab.click("#upload-submit")
        row = "#tables-table tr[data-table='mydb.pts']"
        tab.click(row + " button.preview")
        tab.wait_for_selector("#preview[data-table='mydb.pts']:not([hidden])")
        assert cells(tab, "#preview-table") == [["0.5", "1", "3"], ["1.5", "2", "4"]]
        with tab.expect_download() as info:
            tab.click(row + " button.download-csv")
        assert pd.read_csv(info.value.path())["x"].tolist() == [0.5, 1.5]

        tab.goto(PREFIX + "/sql?sim=mydb")
        tab.fill("#sql-text", "SELECT sum(x) AS s FROM mydb.pts")
        tab.fill("#sql-into", "pts_sum")
        tab.click("#sql-quick")
        tab.wait_for_selector("#sql-status:has-text('Saved as mydb.pts_sum (1 row)')")
        assert tab.get_attribute("#sql-tables-link", "href") == PREFIX + "/tables"
        shot(tab, "root-path-sql")
        tab.click("#sql-tables-link")
        tab.wait_for_selector("#tables-table tr[data-table='mydb.pts_sum']")
    finally:
        context.close()
    assert outside == [] and errors == []


@pytest.mark.browser
def test_without_a_token_the_pages_say_what_to_do(page, api):
    page.goto("/tables")
    assert (
        "labservice token create --user NAME"
        in page.wait_for_selector("#token-needed:not([hidden])").inner_text()
    )
    page.goto("/groups")
    page.wait_for_selector("#token-needed:not([hidden])")
    assert page.is_hidden("#error")

    page.goto("/sql?sim=cosmo64")  # a quick query is public; saving it needs a user: the API's 401, verbatim
    page.select_option("#sql-target", "mydb")  # the untouched example follows the target
    assert page.input_value("#sql-text").startswith("SELECT * FROM mydb.")
    page.select_option("#sql-target", "cosmo64")
    assert "FROM halos WHERE snap = 30" in page.input_value("#sql-text")
    page.fill("#sql-text", TOP5)
    page.click("#sql-quick")
    page.wait_for_selector("#sql-summary:has-text('5 rows.')")
    page.fill("#sql-into", "top5")
    page.click("#sql-quick")
    shown = page.wait_for_selector("#error:not([hidden])").inner_text()
    answer = api(None).post("/datasets/cosmo64/sql", json={"sql": TOP5, "into": "top5"})
    assert answer.status_code == 401 and shown == answer.json()["detail"]
