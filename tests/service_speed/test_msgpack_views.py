"""Zero-copy msgpack decoding (server and client copies): the same values as msgpack, big bins as views,
and every malformed body refused; big point bodies through it give exactly the in-process answer."""

from __future__ import annotations

import httpx
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labclient.codec import pack, unpack
from labclient.codec import unpack_views as client_unpack
from labservice.encoding import unpack_views as server_unpack

DECODERS = [server_unpack, client_unpack]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=300)
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def _plain(obj):
    """Views as bytes, for comparing with msgpack's own answer."""
    if isinstance(obj, memoryview):
        return obj.tobytes()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


@pytest.mark.parametrize("decode", DECODERS)
@settings(max_examples=150, deadline=None)
@given(tree=trees)
def test_same_values_as_msgpack(decode, tree) -> None:
    raw = msgpack.packb(tree, use_bin_type=True)
    assert _plain(decode(raw, min_view=16)) == msgpack.unpackb(raw, raw=False, strict_map_key=False)


@pytest.mark.parametrize("decode", DECODERS)
def test_big_bins_in_maps_are_views_of_the_buffer(decode) -> None:
    big = bytes(range(256)) * 1024
    raw = msgpack.packb({"a": {"data": big}, "b": [big]}, use_bin_type=True)
    buf = np.frombuffer(bytearray(raw), np.uint8)
    out = decode(buf)
    assert isinstance(out["a"]["data"], memoryview) and out["a"]["data"] == big
    assert np.shares_memory(np.frombuffer(out["a"]["data"], np.uint8), buf)
    assert out["b"] == [big]  # inside a list: decoded by msgpack (a copy), still right


@pytest.mark.parametrize("decode", DECODERS)
def test_malformed_data_is_refused(decode) -> None:
    raw = msgpack.packb({"points": b"x" * 100_000, "n": [1, 2, {"k": "v"}]}, use_bin_type=True)
    for cut in (1, 2, 5, 9, 100, len(raw) // 2, len(raw) - 12, len(raw) - 1):
        with pytest.raises(Exception):  # noqa: B017 - msgpack's own classes or ValueError
            decode(raw[:cut])
    bad = [
        raw + b"\x00",  # trailing bytes
        msgpack.packb({1: b"x" * 100_000}),  # a key that is not a string
        b"\x81\xa1a" * 40 + b"\xc0",  # maps nested 40 deep
        b"\xdf\xff\xff\xff\xff" + b"\xc0" * 10,  # a map longer than the data
        b"\xc6\x7f\xff\xff\xff" + b"\x00" * 10,  # a bin longer than the data
    ]
    for raw_bad in bad:
        with pytest.raises(Exception):  # noqa: B017
            decode(raw_bad)


def test_client_unpack_of_big_answers_gives_writable_views() -> None:
    values = np.random.default_rng(1).standard_normal((10_000, 3))
    body = np.frombuffer(bytearray(pack({"values": values, "components": ["ux"]})), np.uint8)
    out = unpack(body)
    np.testing.assert_array_equal(out["values"], values)
    assert out["values"].flags.writeable and np.shares_memory(out["values"], body)


def test_big_point_bodies_give_the_in_process_answer(server, bulk_token: str, served_data) -> None:
    from labclient import Lab
    from labservice import open_dataset

    pts = np.random.default_rng(3).uniform(0, 2 * np.pi, size=(60_000, 3))  # 1.4 MB each way
    expected = open_dataset(served_data["periodic64"]).points("velocity", pts, time=0.2, spatial="lag4")
    with Lab(server.url, token=bulk_token, retries=0) as lab:
        got = lab.dataset("periodic64").points("velocity", pts, time=0.2, spatial="lag4", progress=False)
    np.testing.assert_array_equal(got, expected)
    assert got.flags.writeable


PAD = b"\0" * 300_000  # past the size read into one buffer and decoded in place
POINTS = {"dtype": "float64", "shape": [20_000, 3], "data": b"\0" * 480_000}
SHORT = {"dtype": "float64", "shape": [2, 3], "data": b"\0" * 47}
BAD_BODIES = {
    "trailing": msgpack.packb({"variable": "velocity", "time": 0.1, "points": POINTS}) + b"\x01",
    "short-array": msgpack.packb({"variable": "velocity", "pad": PAD, "points": SHORT}),
    "int-key": msgpack.packb({"variable": "velocity", "pad": PAD, 7: 1}),
    "truncated": msgpack.packb({"pad": PAD})[:-1000],
    "deep": b"\x82\xa3pad" + msgpack.packb(PAD) + b"\xa1a" + b"\x81\xa1a" * 40 + b"\xc0",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_big_msgpack_bodies_are_422(http: httpx.Client, bulk_token: str, body: bytes) -> None:
    r = http.post(
        "/datasets/periodic64/points",
        content=body,
        headers={"Authorization": f"Bearer {bulk_token}", "Content-Type": "application/msgpack"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
