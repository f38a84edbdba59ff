"""Schemathesis against /openapi.json of a real server: every operation, JSON and msgpack bodies.

Checks: no 5xx, every response matches its documented schema, status and content type, Allow headers,
negative data rejected. ``positive_data_acceptance`` is left out: a schema cannot say which times a given
dataset stores, so a schema-valid time outside the stored range is rightly a 422. The response-time check
is kept at a loose 60 s: on a shared 2-core test machine a full-box threshold scan takes over 10 s.

Bounded for ``make test`` (``LABSERVICE_FUZZ_EXAMPLES``, default 3 examples per operation and phase).
The long run: ``LABSERVICE_FUZZ_EXAMPLES=200 LABSERVICE_FUZZ_PHASES=examples,coverage,fuzzing,stateful``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labservice.devserver import ServerThread

pytestmark = [pytest.mark.slow, pytest.mark.dask]

HERE = Path(__file__).parent
ST = str(Path(sys.executable).parent / "st")
EXAMPLES = int(os.environ.get("LABSERVICE_FUZZ_EXAMPLES", "3"))
PHASES = os.environ.get("LABSERVICE_FUZZ_PHASES", "examples,coverage,fuzzing")

# Real identifiers, used most of the time so that fuzzing reaches past the 404s into the parsers.
CONFIG = """
[dictionaries.datasets]
values = ["isotropic64", "channel64", "cosmo64-density"]
[dictionaries.sims]
values = ["cosmo64"]
[dictionaries.variables]
values = ["velocity", "pressure", "density"]
[dictionaries.times]
values = [6.0, 6.05, 7.0, 9.15, 0.0, 1.0]
[dictionaries.snaps]
values = [30, 20, 0]
[dictionaries.halos]
values = [0, 1, 2, 5]

[parameters]
"path.dataset_id" = { dictionary = "datasets", probability = 0.8 }
"path.sim" = { dictionary = "sims", probability = 0.8 }
"path.snap" = { dictionary = "snaps", probability = 0.7 }
"path.halo_id" = { dictionary = "halos", probability = 0.7 }
"query.variable" = { dictionary = "variables", probability = 0.7 }
"body.variable" = { dictionary = "variables", probability = 0.7 }
"body.dataset" = { dictionary = "datasets", probability = 0.7 }
"query.time" = { dictionary = "times", probability = 0.7 }
"body.time" = { dictionary = "times", probability = 0.7 }
"""


def test_openapi_fuzz_finds_no_5xx_and_no_schema_violation(
    server: ServerThread, job_token: str, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    har = tmp_path / "fuzz.har"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "st_hooks",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "NO_COLOR": "1",
    }
    cmd = [
        ST, "--config-file", str(config), "run", f"{server.url}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(EXAMPLES), "--phases", PHASES, "--workers", "1", "--seed", "1",
        "--request-timeout", "120", "--max-response-time", "60", "--generation-database", "none",
        "-H", f"Authorization: Bearer {job_token}",
        "--report", "har", "--report-har-path", str(har),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    report = run.stdout[-12000:] + run.stderr[-4000:]
    assert run.returncode == 0, report
    assert "Tested: " in run.stdout and " passed" in run.stdout, report

    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = [e["response"]["status"] for e in entries]
    assert not [s for s in statuses if s >= 500], report
    operations = {(e["request"]["method"], e["request"]["url"].split("?")[0]) for e in entries}
    assert len(operations) > 25  # every operation was called, most with several ids

    def content_type(entry: dict) -> str:
        return next(
            (h["value"] for h in entry["request"]["headers"] if h["name"].lower() == "content-type"), ""
        )

    msgpack_bodies = [e for e in entries if "msgpack" in content_type(e)]
    decoded = [
        e for e in msgpack_bodies if "not valid msgpack" not in e["response"]["content"].get("text", "")
    ]
    assert len(decoded) > 100, "msgpack bodies did not reach the request parsers"
