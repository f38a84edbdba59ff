"""Portal tests: the demo data behind the shared chain (tests/plugin/stack.py) with jobs on (a real Dask
LocalCluster), a token that may run jobs, headless Chromium (Debian's, driven by Playwright), one page per test.

A failing browser test leaves a screenshot and the page's HTML in the test output directory
(``$LABSERVICE_TEST_OUTPUT/portal`` when set, else ``<pytest basetemp>/portal-screenshots``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labservice.devserver import ServerThread
from labservice.settings import Settings
from tests.plugin.portal import CHROMIUM, CHROMIUM_ARGS, PUBLIC_CUTOUT_BYTES, PUBLIC_POINTS, TOKEN_LIMITS
from tests.plugin.stack import jobs_settings


@pytest.fixture(scope="session")
def settings(built_demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The whole app with the demo datasets, and jobs on a real Dask LocalCluster started by the lifespan."""
    return jobs_settings(
        built_demo_data,
        tmp_path_factory.mktemp("portal"),
        public_points_per_request=PUBLIC_POINTS,
        public_max_cutout_bytes=PUBLIC_CUTOUT_BYTES,
        public_requests_per_minute=100_000,
        public_max_concurrent=64,
    )


@pytest.fixture(scope="session")
def http_base() -> str:
    return ""  # the portal's pages, not the API


@pytest.fixture(scope="module")
def job_token(make_token) -> str:
    """A token that may run batch jobs, with a small synchronous cutout limit."""
    return make_token("portal-user", TOKEN_LIMITS)


@pytest.fixture(scope="session")
def iso(demo_data: Path) -> Any:
    """isotropic64 opened in process, for reference answers."""
    import labservice

    return labservice.open_dataset(str(demo_data / "isotropic64"))


# -- the browser ---------------------------------------------------------------------------------------
# Module scope: Playwright's sync API keeps an event loop current in this thread while it runs, which would
# break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can see whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _output_dir(request: pytest.FixtureRequest) -> Path:
    root = os.environ.get("LABSERVICE_TEST_OUTPUT")
    base = (
        Path(root) / "portal"
        if root
        else request.config._tmp_path_factory.getbasetemp() / "portal-screenshots"
    )  # type: ignore[attr-defined]
    base.mkdir(parents=True, exist_ok=True)
    return base


class PageProblems:
    """Uncaught script errors and Content-Security-Policy violations seen by a page."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(f"CSP: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
def page(browser: Any, server: ServerThread, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page on the portal; a screenshot is saved if the test fails."""
    context = browser.new_context(
        base_url=server.url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(30_000)
    tab = context.new_page()
    problems = PageProblems()
    tab.on("console", problems.on_console)
    tab.on("pageerror", problems.on_page_error)
    tab.problems = problems
    try:
        yield tab
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.nodeid)
            shot = _output_dir(request) / f"{name}.png"
            try:
                tab.screenshot(path=str(shot), full_page=True)
                shot.with_suffix(".html").write_text(tab.content())
                report.sections.append(("screenshot", str(shot)))  # printed with the failure
            except Exception as exc:  # noqa: BLE001 - a broken page must not hide the real failure
                report.sections.append(("screenshot", f"could not take one: {exc!r}"))
        context.close()
    assert not problems.errors, problems.errors
