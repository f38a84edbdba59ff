"""The server the command-line and client-only tests share: the demo datasets with jobs on.

One ``Settings`` object for the session, so ``tests/client/test_cli.py`` and ``test_client_only.py`` reuse
one uvicorn server and one embedded Dask cluster (the chain in ``stack.py`` keys servers by settings).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labservice.limits import Limits
from labservice.settings import Settings
from tests.plugin.stack import jobs_settings

KIB = 1 << 10
# A token that may run jobs but whose synchronous cutouts stop at 64 KiB, so a modest cutout becomes a job.
JOB_TOKEN_LIMITS = Limits(points_per_request=20_000, max_cutout_bytes=64 * KIB, requests_per_minute=1_000_000,
                          max_concurrent=16, jobs_allowed=True, max_running_jobs=4, scratch_bytes=256 << 20,
                          max_job_bytes=64 << 20)  # fmt: skip


@pytest.fixture(scope="session")
def cli_settings(built_demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The demo data (isotropic64, channel64, cosmo64), jobs on, public limits as served by default but for
    the request rate (the README's xarray example reads whole shards, so cutout bytes stay at 16 MiB)."""
    return jobs_settings(
        built_demo_data,
        tmp_path_factory.mktemp("cli"),
        public_requests_per_minute=1_000_000,
        public_max_concurrent=16,
    )
