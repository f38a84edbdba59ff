"""Hardening suite: the demo data behind the shared chain (tests/plugin/stack.py), jobs on.

One server for the whole session serves the demo datasets (isotropic64, channel64, cosmo64 and its
density) with the batch-job engine on an embedded Dask cluster, as ``labservice serve`` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labservice.limits import Limits
from labservice.settings import Settings
from tests.plugin.stack import jobs_settings

MIB = 1 << 20
# Small jobs: 2 at a time, 4 MiB each, 64 MiB of scratch.
JOB_LIMITS = Limits(points_per_request=20_000, max_cutout_bytes=4 * MIB, requests_per_minute=1_000_000,
                    max_concurrent=64, jobs_allowed=True, max_running_jobs=2, scratch_bytes=64 * MIB,
                    max_job_bytes=4 * MIB)  # fmt: skip


@pytest.fixture(scope="session")
def settings(built_demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return jobs_settings(
        built_demo_data,
        tmp_path_factory.mktemp("hardening"),
        cache_bytes=64 * MIB,  # small, so that the load test sees the bound
        public_requests_per_minute=1_000_000,
        public_max_concurrent=64,
        max_body_bytes=8 * MIB,
    )


@pytest.fixture(scope="module")
def job_token(make_token) -> str:
    """A token allowed small jobs."""
    return make_token("hardening-jobs", JOB_LIMITS)
