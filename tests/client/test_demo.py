"""The client against `labservice serve --data <demo data>` run as a real subprocess (the `make run` path)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from labclient import Lab
from labservice.devserver import free_ports

DEMOS = ("isotropic64", "channel64")


@pytest.fixture(scope="module")
def served_demo(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = [d for d in DEMOS if not (demo_data / d).exists()]
    assert not missing, f"demo datasets {missing} missing under {demo_data}; run `make demo` (make test does)"
    (port,) = free_ports(1)
    work = tmp_path_factory.mktemp("demo-tokens")
    env = {  # nothing of the server's own goes into the shared demo data folder
        **os.environ,
        "LABSERVICE_TOKEN_DB": str(work / "t.sqlite"),
        "LABSERVICE_JOB_DB": str(work / "t.sqlite"),
        "LABSERVICE_USER_STORE_URL": str(work / "mydb"),
        "LABSERVICE_JOBS_ENABLED": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "labservice", "serve", "--port", str(port), "--data", str(demo_data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            assert time.monotonic() < deadline, "labservice serve did not answer within 120 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.slow
def test_demo_isotropic_points_and_cutout(served_demo: str, demo_data: Path) -> None:
    from labservice import open_dataset

    local = open_dataset(str(demo_data / "isotropic64"))
    with Lab(served_demo) as lab:
        assert set(DEMOS) <= {d["id"] for d in lab.datasets()}
        iso = lab.dataset("isotropic64")
        t = float(iso.times[3]) + 0.25 * float(iso.times[4] - iso.times[3])
        pts = np.random.default_rng(3).uniform(0, 2 * np.pi, size=(500, 3))  # 2 batches at the public limit
        u = iso.points("velocity", pts, time=t, spatial="lag6", temporal="pchip")
        g = iso.points("velocity", pts[:5], time=t, operator="gradient")
        cut = iso.cutout("pressure", time=float(iso.times[2]), x=(0, 64, 4), y=(0, 64, 4), z=(60, 68))
    np.testing.assert_array_equal(u, local.points("velocity", pts, time=t, spatial="lag6", temporal="pchip"))
    assert g.shape == (5, 3, 3)
    ref = local.cutout("pressure", time=float(local.meta.times[2]), x=(0, 64, 4), y=(0, 64, 4), z=(60, 68))
    np.testing.assert_array_equal(cut["pressure"].values, ref.data)
    local.close()


@pytest.mark.slow
def test_demo_channel_walls(served_demo: str) -> None:
    with Lab(served_demo) as lab:
        ch = lab.dataset("channel64")
        y = ch.meta["grid"]["y"]
        assert y["periodic"] is False
        res = ch.query_points("velocity", [[0.5, -0.999, 0.5], [0.5, 0.0, 0.5]], time=float(ch.times[0]))
        assert res["clipped"].tolist() == [True, False]
        with pytest.raises(Exception, match="outside"):
            ch.points("velocity", [[0.5, 1.5, 0.5]], time=float(ch.times[0]))
