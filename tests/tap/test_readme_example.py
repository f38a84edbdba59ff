"""The README's pyvo example ("From TOPCAT, pyvo and astroquery"), run as written against the demo data.

Only the server address and the token differ from the README text (the test server's port, a real token).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from labservice.settings import Settings
from tests.plugin.stack import jobs_settings
from tests.tap.conftest import TAP_LIMITS

pytestmark = [
    pytest.mark.dask,
    pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"),
]

# Keep in step with README.md, section "From TOPCAT, pyvo and astroquery".
README_EXAMPLE = """\
import pyvo, requests
session = requests.Session(); session.headers["Authorization"] = "Bearer YOUR-TOKEN"  # async jobs need it
tap = pyvo.dal.TAPService("http://localhost:8000/tap", session=session)
print(tap.run_sync("SELECT TOP 10 id, mass FROM cosmo64.halos WHERE snap = 30 ORDER BY mass DESC").to_table())
print(tap.run_async("SELECT snap, COUNT(*) AS n FROM cosmo64.halos GROUP BY snap ORDER BY snap").to_table())
"""


@pytest.fixture(scope="module")
def settings(built_demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return jobs_settings(built_demo_data, tmp_path_factory.mktemp("tap-readme"), public_requests_per_minute=100_000)


def test_readme_pyvo_example_runs_as_written(server, make_token, local_demo_halos):
    token = make_token("readme", TAP_LIMITS)
    assert len(README_EXAMPLE.strip().splitlines()) == 5
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "```python\n" + README_EXAMPLE + "```" in readme, "README's pyvo example differs from this test's"
    code = README_EXAMPLE.replace("http://localhost:8000", server.url).replace("YOUR-TOKEN", token)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README example", "exec"), {})
    text = out.getvalue()
    top = local_demo_halos[local_demo_halos["snap"] == 30].nlargest(10, "mass")
    assert all(str(int(i)) in text for i in top["id"]), text
    assert "Msun / h" in text and any(line.split() == ["snap", "n"] for line in text.splitlines())


@pytest.fixture(scope="module")
def local_demo_halos(built_demo_data: Path):
    import pandas as pd

    return pd.read_parquet(built_demo_data / "cosmo64" / "halos.parquet")
