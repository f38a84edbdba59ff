"""Point queries over HTTP: exact values at nodes, msgpack == JSON, series, particles, filter, threshold."""

from __future__ import annotations

import httpx
import msgpack
import numpy as np

from labservice.devserver import _periodic_field

H = 2 * np.pi / 16


def _mp(obj: dict) -> bytes:
    def tree(v):
        if isinstance(v, np.ndarray):
            return {"dtype": v.dtype.name, "shape": list(v.shape), "data": v.tobytes()}
        return {k: tree(x) for k, x in v.items()} if isinstance(v, dict) else v

    return msgpack.packb(tree(obj), use_bin_type=True)


def _unmp(data: bytes) -> dict:
    def hook(d):
        if set(d) == {"dtype", "shape", "data"}:
            return np.frombuffer(d["data"], dtype=d["dtype"]).reshape(d["shape"])
        return d

    return msgpack.unpackb(data, object_hook=hook, raw=False)


def _post_msgpack(http: httpx.Client, path: str, body: dict) -> httpx.Response:
    return http.post(
        path,
        content=_mp(body),
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )


def test_values_at_grid_nodes_are_the_stored_field(http: httpx.Client) -> None:
    idx = np.array([[0, 0, 0], [3, 5, 7], [15, 1, 9], [8, 8, 8]])
    pts = idx * H
    r = http.post(
        "/datasets/periodic16/points",
        json={"variable": "velocity", "time": 0.2, "points": pts.tolist(), "spatial": "lag4"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["components"] == ["ux", "uy", "uz"]
    u, _ = _periodic_field(pts[:, 0], pts[:, 1], pts[:, 2], 0.2)  # meshgrid: pick the diagonal entries
    expected = np.array([u[i, i, i] for i in range(len(pts))])
    np.testing.assert_allclose(np.asarray(body["values"]), expected, atol=2e-6)


def test_msgpack_and_json_give_identical_numbers(http: httpx.Client) -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 2 * np.pi, size=(200, 3))
    body = {
        "variable": "velocity",
        "time": 0.15,
        "points": pts,
        "spatial": "lag6",
        "temporal": "pchip",
        "operator": "gradient",
    }
    binary = _post_msgpack(http, "/datasets/periodic16/points", body)
    text = http.post("/datasets/periodic16/points", json={**body, "points": pts.tolist()})
    assert binary.status_code == 200 and text.status_code == 200, (binary.text, text.text)
    assert binary.headers["content-type"] == "application/msgpack"
    a = _unmp(binary.content)["values"]
    b = np.asarray(text.json()["values"], dtype=a.dtype)
    assert a.shape == (200, 3, 3)
    np.testing.assert_array_equal(a, b)


def test_big_msgpack_answer_sent_in_pieces_equals_json(http: httpx.Client, big_token: str) -> None:
    # 8,000 points x 3 components x 3 derivatives = 576 kB of values: past the size sent as a view
    pts = np.random.default_rng(7).uniform(0, 2 * np.pi, size=(8_000, 3))
    body = {"variable": "velocity", "time": 0.1, "points": pts, "spatial": "lag4", "operator": "gradient"}
    auth = {"Authorization": f"Bearer {big_token}"}
    binary = http.post(
        "/datasets/periodic16/points",
        content=_mp(body),
        headers={**auth, "Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    text = http.post("/datasets/periodic16/points", json={**body, "points": pts.tolist()}, headers=auth)
    assert binary.status_code == 200 and text.status_code == 200, (binary.text, text.text)
    assert int(binary.headers["content-length"]) == len(binary.content)
    got = _unmp(binary.content)
    assert got["values"].shape == (8_000, 3, 3) and got["clipped"].shape == (8_000,)
    np.testing.assert_array_equal(got["values"], np.asarray(text.json()["values"]))
    assert got["components"] == text.json()["components"]


def test_pieces_concatenate_to_msgpack_packb() -> None:
    from labservice.encoding import _to_msgpack_tree, pack, pack_pieces

    big = np.arange(30_000.0).reshape(10_000, 3)
    payload = {
        "values": big,
        "nested": [{"a": big[:, 0]}, {"b": [1, 2.5, "x"]}],
        "n": 3,
        "empty": np.zeros(0),
    }
    pieces = pack_pieces(payload)
    assert any(isinstance(p, memoryview) for p in pieces)  # the big arrays are not copied
    assert pack(payload) == msgpack.packb(_to_msgpack_tree(payload), use_bin_type=True)


def test_time_series_has_leading_time_axis(http: httpx.Client) -> None:
    pts = np.array([[0.3, 1.0, 2.0], [4.0, 5.0, 6.0]])
    r = _post_msgpack(
        http,
        "/datasets/periodic16/points",
        {"variable": "pressure", "times": {"start": 0.0, "end": 0.4, "step": 0.1}, "points": pts},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-lab-cost"] == "10"
    out = _unmp(r.content)
    assert out["values"].shape == (5, 2, 1)
    np.testing.assert_allclose(out["times"], [0.0, 0.1, 0.2, 0.3, 0.4])
    # The field grows as (1 + t): every series is linear in time.
    v = out["values"][:, :, 0]
    np.testing.assert_allclose(v / v[0], np.outer(1 + np.array(out["times"]), [1, 1]), rtol=1e-4)


def test_wall_dataset_flags_clipped_stencils(http: httpx.Client) -> None:
    pts = [[0.5, -0.95, 0.5], [0.5, 0.0, 0.5]]
    r = http.post(
        "/datasets/wall16/points",
        json={"variable": "velocity", "time": 0.5, "points": pts, "spatial": "lag4"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["clipped"] == [True, False]


def test_particles_follow_the_flow(http: httpx.Client) -> None:
    pts = np.array([[1.0, 2.0, 3.0], [4.0, 1.0, 0.5]])
    r = _post_msgpack(
        http,
        "/datasets/periodic16/particles",
        {"points": pts, "t_start": 0.0, "t_end": 0.2, "dt": 0.01, "every": 0.1, "scheme": "rk4"},
    )
    assert r.status_code == 200, r.text
    out = _unmp(r.content)
    assert out["positions"].shape == (3, 2, 3)
    np.testing.assert_allclose(out["positions"][0], pts)
    assert np.abs(out["positions"][-1] - pts).max() > 1e-3


def test_box_filter_averages_the_nodes(http: httpx.Client) -> None:
    node = np.array([3, 5, 7])
    r = http.post(
        "/datasets/periodic16/filter",
        json={"variable": "pressure", "time": 0.0, "points": [(node * H).tolist()], "width": 3},
    )
    assert r.status_code == 200, r.text
    # Averaging cos over 3 nodes multiplies it by (1 + 2 cos h) / 3, along every axis separately.
    expected = (1 + 2 * np.cos(H)) / 3 * np.cos(node * H).sum()
    np.testing.assert_allclose(np.asarray(r.json()["values"]).ravel(), [expected], atol=1e-5)


def test_threshold_finds_the_maxima(http: httpx.Client) -> None:
    r = http.post(
        "/datasets/periodic16/threshold",
        json={"variable": "pressure", "time": 0.0, "threshold": 2.95, "x": "0:16", "y": "0:16", "z": "0:16"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    # |p| = |cos x + cos y + cos z| is 3 at the origin and at (pi, pi, pi); the next nodes give 2.92.
    found = sorted(map(tuple, np.asarray(body["indices"]).reshape(-1, 3).tolist()))
    assert found == [(0, 0, 0), (8, 8, 8)]
