"""The thin client against a real server: batching, concurrency, errors, retries, cutouts, tracking."""

from __future__ import annotations

import time

import numpy as np
import pytest

from labclient import ConnectionFailed, InvalidRequest, Lab, LimitError, NotFoundError, RateLimitError
from labservice.devserver import free_ports
from labservice.limits import Limits

RNG = np.random.default_rng(7)
PTS = RNG.uniform(0, 2 * np.pi, size=(1000, 3))


def test_points_equal_the_in_process_engine(server, local, big_token) -> None:
    with Lab(server.url, token=big_token) as lab:
        iso = lab.dataset("periodic16")
        remote = iso.points("velocity", PTS, time=0.25, spatial="lag6", temporal="pchip")
        grad = iso.points("velocity", PTS[:10], time=0.3, operator="gradient")
    ref = local["periodic16"]
    np.testing.assert_array_equal(
        remote, ref.points("velocity", PTS, time=0.25, spatial="lag6", temporal="pchip")
    )
    assert grad.shape == (10, 3, 3)
    np.testing.assert_array_equal(grad, ref.points("velocity", PTS[:10], time=0.3, operator="gradient"))


def test_batching_returns_what_one_request_does(server, big_token) -> None:
    with Lab(server.url, token=big_token) as lab:
        one = lab.dataset("periodic16").points("pressure", PTS, times=(0.0, 0.4, 0.1))
    with Lab(server.url, max_concurrency=3) as public:  # 256 points x 5 times per request -> 51 per batch
        iso = public.dataset("periodic16")
        assert iso.limits["points_per_request"] == 256
        batched = iso.points("pressure", PTS, times=(0.0, 0.4, 0.1))
        small = iso.points("pressure", PTS, times=(0.0, 0.4, 0.1), batch_size=7)
    assert one.shape == (5, 1000, 1)
    np.testing.assert_array_equal(batched, one)
    np.testing.assert_array_equal(small, one)


def test_progress_bar_when_asked(server, capsys) -> None:
    with Lab(server.url) as lab:
        lab.dataset("periodic16").points("pressure", PTS[:600], time=0.0, progress=True)
    assert "600/600" in capsys.readouterr().err


def test_server_errors_carry_the_detail(server) -> None:
    with Lab(server.url) as lab:
        with pytest.raises(NotFoundError, match="periodic16"):
            lab.dataset("periodc16")
        iso = lab.dataset("periodic16")
        with pytest.raises(InvalidRequest, match="lag4") as err:
            iso.points("velocity", PTS[:3], time=0.1, spatial="lag5")
        assert err.value.status == 422 and err.value.code == "invalid_input"
        with pytest.raises(InvalidRequest, match="shape"):
            iso.points("velocity", [[1.0, 2.0]], time=0.1)
        with pytest.raises(LimitError, match="job"):
            iso.cutout("velocity", time=0.0)
        assert lab.health()["status"] == "ok"


def test_connection_failures_are_retried_then_raised() -> None:
    (port,) = free_ports(1)  # a port nobody listens on
    lab = Lab(f"http://127.0.0.1:{port}", retries=2, backoff=0.01)
    with pytest.raises(ConnectionFailed, match="3 attempts"):
        lab.datasets()
    # The waits are full jitter now (issue 22): their shape is checked in
    # test_retries.py::test_waits_are_full_jitter_and_obey_retry_after.


def test_rate_limit_is_retried_after_retry_after(server, tokens) -> None:
    # 12 per minute refills one request every 5 s: the 12 requests below take far less even on a busy
    # machine (at 60 per minute, 60 requests taking over 1 s got a refill and no 429)
    _, token = tokens.create("twelve", Limits(requests_per_minute=12))
    impatient = Lab(server.url, token=token, retries=0)
    patient = Lab(server.url, token=token, retries=3)
    for _ in range(12):
        impatient.datasets()
    with pytest.raises(RateLimitError, match="per minute"):
        impatient.datasets()
    t0 = time.monotonic()
    assert patient.datasets()  # waits for Retry-After (up to 5 s at 12 per minute), then succeeds
    assert time.monotonic() - t0 >= 0.9


def test_cutout_as_xarray_with_physical_coordinates(server, local, big_token) -> None:
    with Lab(server.url, token=big_token) as lab:
        cut = lab.dataset("periodic16").cutout("velocity", time=0.3, x=(0, 16, 2), y=(0, 16, 2), z=(14, 18))
        arrays = lab.dataset("periodic16").cutout(
            "velocity", time=0.3, x=(0, 16, 2), y=(0, 16, 2), z=(14, 18), as_numpy=True
        )
    ref = local["periodic16"].cutout("velocity", time=0.3, x=(0, 16, 2), y=(0, 16, 2), z=(14, 18))
    da = cut["velocity"]
    assert da.dims == ("z", "y", "x", "component") or da.dims[:3] == ("z", "y", "x")
    np.testing.assert_array_equal(da.values, ref.data)
    np.testing.assert_allclose(
        cut["z"].values, np.arange(14, 18) * 2 * np.pi / 16
    )  # wrapped, still increasing
    assert cut.attrs["dataset"] == "periodic16" and cut.attrs["time"] == pytest.approx(0.3)
    assert list(cut.attrs["strides"]) == [2, 2, 1]
    assert da.attrs["units"] == "m/s"
    np.testing.assert_array_equal(arrays["data"], ref.data)
    arrays["data"][0, 0, 0, 0] = 1.0  # the client hands back writable arrays


def test_download_hdf5_and_slice_png(server, big_token, tmp_path) -> None:
    import h5py

    with Lab(server.url, token=big_token) as lab:
        iso = lab.dataset("periodic16")
        path = iso.download_cutout(str(tmp_path / "c.h5"), "pressure", 0.1, x=(0, 8), y=(0, 8), z=(0, 8))
        png = iso.slice_png("pressure", 0.1, axis="y", index=3, cmap="viridis")
    with h5py.File(path, "r") as f:
        assert "x" in f and f["x"].shape == (8,)
    assert png[:4] == b"\x89PNG"


def test_track_matches_in_process(server, local) -> None:
    pts = PTS[:20]
    with Lab(server.url) as lab:
        paths, times = lab.dataset("periodic16").track(pts, 0.0, 0.2, 0.01, every=0.05, return_times=True)
    ref = local["periodic16"].track(pts, 0.0, 0.2, 0.01, every=0.05)
    np.testing.assert_array_equal(paths, ref.trajectory)
    np.testing.assert_allclose(times, ref.times)
    assert paths.shape[1:] == (20, 3)


def test_environment_variables(server, big_token, monkeypatch) -> None:
    monkeypatch.setenv("LABSERVICE_URL", server.url)
    monkeypatch.setenv("LABSERVICE_TOKEN", big_token)
    with Lab() as lab:
        assert lab.dataset("periodic16").limits["points_per_request"] == 50_000


def test_filter_threshold_and_listing(server, local) -> None:
    with Lab(server.url) as lab:
        assert {d["id"] for d in lab.datasets()} == {"periodic16", "wall16"}
        iso = lab.dataset("periodic16")
        filtered = iso.filter("velocity", PTS[:300], time=0.1, width=3)  # 2 batches of the public 256
        found = iso.threshold("pressure", time=0.0, threshold=2.95, x=(0, 16), y="0:16")
    ref = local["periodic16"]
    np.testing.assert_array_equal(filtered, ref.filter("velocity", PTS[:300], 3, time=0.1))
    assert sorted(map(tuple, found["indices"].tolist())) == [(0, 0, 0), (8, 8, 8)]
    np.testing.assert_allclose(np.abs(found["values"]), 3.0, rtol=1e-6)
