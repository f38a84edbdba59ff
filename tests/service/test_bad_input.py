"""Every kind of bad input gets a 4xx JSON error whose detail says what to change; the server keeps going."""

from __future__ import annotations

import json

import httpx
import msgpack
import numpy as np
import pytest

GOOD = {"variable": "velocity", "time": 0.1, "points": [[0.1, 0.2, 0.3]]}
MP = {"Content-Type": "application/msgpack"}


def _arr(dtype: str, shape: list[int], data: bytes) -> dict:
    return {"dtype": dtype, "shape": shape, "data": data}


def _mp(body: dict) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


# (name, dataset, request kwargs for httpx, expected status, words the detail must contain)
POINT_CASES = [
    ("unknown dataset", "periodc16", {"json": GOOD}, 404, ["periodic16"]),
    ("unknown variable", "periodic16", {"json": {**GOOD, "variable": "velocty"}}, None, ["velocity"]),
    ("unknown method", "periodic16", {"json": {**GOOD, "spatial": "lag5"}}, 422, ["lag4"]),
    ("unknown operator", "periodic16", {"json": {**GOOD, "operator": "gradiant"}}, 422, ["gradient"]),
    ("unknown temporal", "periodic16", {"json": {**GOOD, "temporal": "pchp"}}, 422, ["pchip"]),
    (
        "nan in json",
        "periodic16",
        {
            "content": '{"variable": "velocity", "time": 0.1, "points": [[NaN, 0, 0]]}',
            "headers": {"Content-Type": "application/json"},
        },
        422,
        ["finite"],
    ),
    (
        "inf in msgpack",
        "periodic16",
        {
            "content": _mp({**GOOD, "points": _arr("float64", [1, 3], np.array([0, np.inf, 0.0]).tobytes())}),
            "headers": MP,
        },
        422,
        ["finite"],
    ),
    (
        "nan time",
        "periodic16",
        {
            "content": '{"variable": "velocity", "time": NaN, "points": [[0, 0, 0]]}',
            "headers": {"Content-Type": "application/json"},
        },
        422,
        ["time"],
    ),
    ("outside wall domain", "wall16", {"json": {**GOOD, "points": [[0.1, 1.5, 0.2]]}}, 422, ["outside", "y"]),
    ("time after range", "periodic16", {"json": {**GOOD, "time": 99.0}}, 422, ["time"]),
    ("time before range", "periodic16", {"json": {**GOOD, "time": -1.0}}, 422, ["time"]),
    (
        "series past range",
        "periodic16",
        {"json": {**GOOD, "time": None, "times": {"start": 0, "end": 9, "step": 0.1}}},
        422,
        ["time"],
    ),
    ("empty points", "periodic16", {"json": {**GOOD, "points": []}}, 422, ["empty"]),
    ("no time", "periodic16", {"json": {"variable": "velocity", "points": [[0, 0, 0]]}}, 422, ["time"]),
    ("malformed json", "periodic16", {"content": b'{"variable": "velocity", ', "headers": {}}, 422, ["JSON"]),
    ("malformed msgpack", "periodic16", {"content": b"\xc1\xff\x00junk", "headers": MP}, 422, ["msgpack"]),
    (
        "absurdly nested json",
        "periodic16",
        {"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"Content-Type": "application/json"}},
        422,
        ["JSON"],
    ),
    (
        "absurdly nested msgpack",
        "periodic16",
        {"content": b"\x91" * 100_000 + b"\xc0", "headers": MP},
        422,
        ["msgpack"],
    ),
    ("body not an object", "periodic16", {"json": [1, 2, 3]}, 422, ["object"]),
    ("wrong shape", "periodic16", {"json": {**GOOD, "points": [[0.1, 0.2]]}}, 422, ["(N, 3)"]),
    (
        "wrong shape msgpack",
        "periodic16",
        {"content": _mp({**GOOD, "points": _arr("float64", [3, 2], bytes(48))}), "headers": MP},
        422,
        ["(N, 3)"],
    ),
    (
        "wrong dtype",
        "periodic16",
        {"content": _mp({**GOOD, "points": _arr("complex128", [1, 3], bytes(48))}), "headers": MP},
        422,
        ["dtype"],
    ),
    (
        "object dtype",
        "periodic16",
        {"content": _mp({**GOOD, "points": _arr("O", [1, 3], bytes(24))}), "headers": MP},
        422,
        ["dtype"],
    ),
    (
        "short data",
        "periodic16",
        {"content": _mp({**GOOD, "points": _arr("float64", [2, 3], bytes(24))}), "headers": MP},
        422,
        ["bytes"],
    ),
    ("strings as points", "periodic16", {"json": {**GOOD, "points": [["a", "b", "c"]]}}, 422, ["points"]),
    ("unknown field", "periodic16", {"json": {**GOOD, "colour": "red"}}, 422, ["colour"]),
    ("too narrow grid", "wall16", {"json": {**GOOD, "spatial": "lag8"}}, 422, ["lag8", "6"]),
    (
        "unsupported content type",
        "periodic16",
        {"content": b"x", "headers": {"Content-Type": "text/csv"}},
        422,
        ["application/json"],
    ),
    ("too many points", "periodic16", {"json": {**GOOD, "points": [[0.1, 0.2, 0.3]] * 300}}, 413, ["limit"]),
    (
        "body over limit",
        "periodic16",
        {"content": b"[" + b"0," * (1 << 20) + b"0]", "headers": {"Content-Type": "application/json"}},
        413,
        ["body"],
    ),
]


@pytest.mark.parametrize("case", POINT_CASES, ids=[c[0] for c in POINT_CASES])
def test_points_bad_input(http: httpx.Client, case: tuple) -> None:
    _, dataset, kwargs, status, words = case
    r = http.post(f"/datasets/{dataset}/points", **kwargs)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if status is not None:
        assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"detail", "code"}
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]
    assert "Traceback" not in r.text
    assert http.get("/health").status_code == 200


CUTOUT_CASES = [
    ("stride 0", {"x": "0:8:0"}, ["step"]),
    ("reversed range", {"x": "8:2"}, ["stop"]),
    ("outside wall axis", {"y": "0:9"}, ["y"]),
    ("not a range", {"z": "a:b"}, ["start:stop"]),
    ("unknown format", {"format": "hdf6"}, ["hdf5"]),
    ("time not stored", {"time": "0.15"}, ["stored"]),
    ("time out of range", {"time": "7"}, ["time"]),
    ("time not a number", {"time": "soon"}, ["time"]),
    ("unknown variable", {"variable": "presure"}, ["velocity"]),
]


@pytest.mark.parametrize("case", CUTOUT_CASES, ids=[c[0] for c in CUTOUT_CASES])
def test_cutout_bad_input(http: httpx.Client, case: tuple) -> None:
    _, params, words = case
    query = {
        "variable": "velocity",
        "time": "0.5",
        "x": "0:4",
        "y": "0:6",
        "z": "0:4",
        "format": "npy",
        **params,
    }
    r = http.get("/datasets/wall16/cutout", params=query)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    detail = r.json()["detail"]
    for word in words:
        assert word.lower() in detail.lower(), detail
    assert http.get("/health").status_code == 200


def test_cutout_over_limit_says_how_to_submit_a_job(http: httpx.Client) -> None:
    r = http.get("/datasets/periodic16/cutout", params={"variable": "velocity", "time": "0", "format": "npy"})
    assert r.status_code == 413
    assert "job" in r.json()["detail"] and "/api/v1/jobs" in r.json()["detail"]


def test_json_error_body_is_valid_json(http: httpx.Client) -> None:
    r = http.post(
        "/datasets/periodic16/points", content=b"\x00\x01", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert json.loads(r.text)["code"] == "invalid_input"


def test_chunked_body_over_limit_is_refused_while_streaming(http: httpx.Client) -> None:
    def pieces():
        yield b'{"variable": "velocity", "time": 0.1, "points": ['
        for _ in range(300):  # 300 x 8 KiB > the 1 MiB limit, without a Content-Length
            yield b"[0.1, 0.2, 0.3]," * 512
        yield b"[0, 0, 0]]}"

    r = http.post(
        "/datasets/periodic16/points", content=pieces(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "body" in r.json()["detail"]
    assert http.get("/health").status_code == 200
