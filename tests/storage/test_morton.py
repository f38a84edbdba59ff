"""Morton keys against a plain-Python bit-interleaving reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labservice.storage.morton import MAX_INDEX, decode3, encode3, morton_argsort

coord = st.integers(min_value=0, max_value=MAX_INDEX)


def reference_key(ix: int, iy: int, iz: int) -> int:
    key = 0
    for bit in range(21):
        key |= ((ix >> bit) & 1) << (3 * bit)
        key |= ((iy >> bit) & 1) << (3 * bit + 1)
        key |= ((iz >> bit) & 1) << (3 * bit + 2)
    return key


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(coord, coord, coord), min_size=1, max_size=50))
def test_encode_matches_reference_and_decodes_back(points: list[tuple[int, int, int]]) -> None:
    ix, iy, iz = (np.array(c, dtype=np.int64) for c in zip(*points, strict=False))
    keys = encode3(ix, iy, iz)
    assert keys.dtype == np.uint64
    assert [int(k) for k in keys] == [reference_key(*p) for p in points]
    dx, dy, dz = decode3(keys)
    np.testing.assert_array_equal(dx, ix)
    np.testing.assert_array_equal(dy, iy)
    np.testing.assert_array_equal(dz, iz)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 1023), st.integers(0, 1023)), min_size=1, max_size=80))
def test_argsort_orders_by_reference_key(points: list[tuple[int, int, int]]) -> None:
    ix, iy, iz = (np.array(c) for c in zip(*points, strict=False))
    order = morton_argsort(ix, iy, iz)
    ref = sorted(range(len(points)), key=lambda i: (reference_key(*points[i]), i))
    assert order.tolist() == ref


def test_known_values_and_broadcasting() -> None:
    assert int(encode3(1, 0, 0)) == 1
    assert int(encode3(0, 1, 0)) == 2
    assert int(encode3(0, 0, 1)) == 4
    assert int(encode3(MAX_INDEX, MAX_INDEX, MAX_INDEX)) == 2**63 - 1
    keys = encode3(np.arange(4)[:, None], 0, np.arange(3)[None, :])
    assert keys.shape == (4, 3)
    # The 2x2x2 cube comes first in Z order: keys 0..7 are exactly its corners.
    cube = encode3(*np.unravel_index(np.arange(8), (2, 2, 2)))
    assert sorted(int(k) for k in cube) == list(range(8))


@pytest.mark.parametrize("bad", [-1, MAX_INDEX + 1])
def test_out_of_range_coordinates_are_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="21-bit"):
        encode3(np.array([bad]), 0, 0)
