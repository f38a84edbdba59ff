"""The client's one retry policy (labclient/retrying.py) against a real server that counts requests.

Busy answers are retried after Retry-After; a request that reached the server and timed out is sent again
at most once, and only when it is safe to repeat; a job submission's quota answer (429) is not retried.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from starlette.responses import JSONResponse, Response

from labclient import ConnectionFailed, Lab, RateLimitError, ServerError
from labclient.dataset import RemoteDataset
from labclient.jobs import submit_job
from labclient.retrying import RetryPolicy, parse_retry_after
from labservice.devserver import free_ports

SLOW = 1.5  # seconds the slow routes take; the clients below time out after 0.3 s


def _busy(times: int, retry_after: str | None = "1"):
    async def handler(request, hit):
        if hit <= times:
            headers = {"Retry-After": retry_after} if retry_after else {}
            return JSONResponse({"detail": "busy, come back later"}, status_code=503, headers=headers)
        return JSONResponse({"ok": True, "hit": hit})

    return handler


async def _slow(request, hit):
    await asyncio.sleep(SLOW)
    return JSONResponse({"late": True})


def test_busy_answers_are_retried_after_retry_after(counting) -> None:
    counting.route("/busy", "busy", _busy(2))
    counting.start()
    with Lab(counting.url, retries=5, backoff=0.01) as lab:
        start = time.monotonic()
        answer = lab.transport.call("GET", "/busy", binary=False)
        waited = time.monotonic() - start
    assert answer == {"ok": True, "hit": 3}
    assert len(counting.hits["busy"]) == 3
    assert waited >= 2.0  # two answers each said Retry-After: 1; backoff alone would be ~0.03 s


def test_busy_to_the_end_raises_the_servers_detail(counting) -> None:
    counting.route("/busy", "busy", _busy(100, retry_after="0"))
    counting.start()
    with (
        Lab(counting.url, retries=3, backoff=0.01) as lab,
        pytest.raises(ServerError, match="busy, come back"),
    ):
        lab.transport.call("GET", "/busy", binary=False)
    assert len(counting.hits["busy"]) == 4  # the first send and 3 retries


def test_a_point_batch_that_timed_out_is_sent_again_once(counting) -> None:
    counting.route("/api/v1/datasets/slow/points", "points", _slow, methods=("POST",))
    counting.start()
    info = {
        "id": "slow",
        "metadata": {"variables": {"velocity": {"components": ["ux", "uy", "uz"]}}, "times": [0.0]},
        "limits": {"points_per_request": 1000, "max_concurrent": 4},
        "grid": {"shape": [8, 8, 8]},
    }
    with Lab(counting.url, timeout=0.3, retries=5, backoff=0.01) as lab:
        with pytest.raises(ConnectionFailed, match="no answer in time"):
            RemoteDataset(lab, info).points("velocity", np.zeros((10, 3)), time=0.0)
    assert len(counting.hits["points"]) == 2  # before: 6 sends


def test_a_request_unsafe_to_repeat_is_not_sent_again_after_a_timeout(counting) -> None:
    counting.route("/api/v1/jobs", "jobs", _slow, methods=("POST",))
    counting.start()
    with Lab(counting.url, timeout=0.3, retries=5, backoff=0.01) as lab:
        with pytest.raises(ConnectionFailed, match="may have been carried out"):
            submit_job(lab, {"kind": "cutout", "dataset": "x"})
    time.sleep(SLOW)  # a second send would have arrived by now
    assert len(counting.hits["jobs"]) == 1


def test_a_job_quota_answer_is_not_waited_out(counting) -> None:
    async def quota(request, hit):
        return JSONResponse({"detail": "job quota reached"}, status_code=429, headers={"Retry-After": "30"})

    counting.route("/api/v1/jobs", "jobs", quota, methods=("POST",))
    counting.start()
    with Lab(counting.url, retries=5) as lab, pytest.raises(RateLimitError, match="job quota"):
        submit_job(lab, {"kind": "cutout", "dataset": "x"})
    assert len(counting.hits["jobs"]) == 1


def test_connection_refused_is_retried_with_jittered_backoff() -> None:
    (port,) = free_ports(1)  # nothing listens there
    with Lab(f"http://127.0.0.1:{port}", retries=3, backoff=0.05) as lab:
        start = time.monotonic()
        with pytest.raises(ConnectionFailed, match="after up to 4 attempts"):
            lab.datasets()
    assert time.monotonic() - start < 0.05 + 0.1 + 0.2 + 2.0  # at most the three windows, plus slack


def test_waits_are_full_jitter_and_obey_retry_after() -> None:
    policy = RetryPolicy(retries=5, backoff=0.5, max_wait=3.0)
    waits = [policy.wait(2) for _ in range(400)]
    assert 0.0 <= min(waits) < 0.2 and 1.8 < max(waits) <= 2.0  # uniform over [0, 0.5 * 2**2]
    assert len(set(waits)) > 390
    assert max(policy.wait(10) for _ in range(200)) <= 3.0  # capped
    told = [policy.wait(0, "2") for _ in range(200)]
    assert 2.0 <= min(told) and max(told) <= 2.5 and len(set(told)) > 190  # Retry-After, then jitter
    assert policy.wait(0, "120") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now
    assert parse_retry_after("soon") is None


def test_the_xarray_engine_reads_retry_busy_answers(counting) -> None:
    pytest.importorskip("aiohttp")
    from labclient.xarray_backend import retrying_client

    counting.route("/busy", "busy", _busy(2, retry_after="0"))
    counting.start()

    async def read() -> int:
        session = await retrying_client()
        async with session:
            async with session.get(f"{counting.url}/busy") as response:
                return response.status

    assert asyncio.run(read()) == 200
    assert len(counting.hits["busy"]) == 3


def test_async_lab_uses_the_same_policy(counting) -> None:
    from labclient.aio import AsyncLab

    counting.route("/busy", "busy", _busy(1, retry_after="0"))
    counting.route("/slow", "slow", _slow, methods=("POST",))
    counting.start()

    async def run() -> dict:
        async with AsyncLab(counting.url, timeout=0.3, backoff=0.01) as lab:
            answer = await lab.transport.call("GET", "/busy", binary=False)
            with pytest.raises(ConnectionFailed):
                await lab.transport.call("POST", "/slow", body={"a": 1}, idempotent=True)
            return answer

    assert asyncio.run(run())["hit"] == 2
    assert len(counting.hits["slow"]) == 2


def test_a_plain_response_is_not_retried(counting) -> None:
    async def teapot(request, hit):
        return Response("no", status_code=418)

    counting.route("/teapot", "teapot", teapot)
    counting.start()
    with Lab(counting.url, retries=5) as lab, pytest.raises(Exception, match="no"):
        lab.transport.call("GET", "/teapot", binary=False)
    assert len(counting.hits["teapot"]) == 1
