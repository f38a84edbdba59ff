"""Cutouts equal the stored arrays bit for bit, read only the chunks they need, and reject bad ranges."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.cutout import cutout_nbytes, cutout_shape, iter_cutout_blocks, parse_range
from labservice.cutout.region import plan_cutout, read_cutout, time_index
from labservice.errors import InvalidInput, NotFound, OutOfDomain
from tests.plugin.grids import NX, NY, NZ, Z_COORDS, small_meta


def reference(a: np.ndarray, t: int, x: tuple, y: tuple, z: tuple) -> np.ndarray:
    """np.take with wrap along each axis: the independent reference for a cutout."""
    out = np.take(a[t], np.arange(*z), axis=0, mode="wrap")
    out = np.take(out, np.arange(*y), axis=1, mode="wrap")
    return np.take(out, np.arange(*x), axis=2, mode="wrap")


def random_ranges(rng: np.random.Generator) -> tuple[tuple, tuple, tuple]:
    def periodic(n: int) -> tuple[int, int, int]:
        start = int(rng.integers(-2 * n, 2 * n))
        return start, start + int(rng.integers(1, 3 * n)), int(rng.integers(1, 2 * n))

    z0 = int(rng.integers(0, NZ))
    return periodic(NX), periodic(NY), (z0, int(rng.integers(z0 + 1, NZ + 1)), int(rng.integers(1, NZ + 2)))


def test_random_ranges_match_store_bit_for_bit(dataset):
    reader = dataset.reader()
    rng = np.random.default_rng(42)
    for _ in range(60):
        x, y, z = random_ranges(rng)
        var = str(rng.choice(["velocity", "pressure"]))
        t = int(rng.integers(0, 3))
        cut = read_cutout(reader, var, t, x=x, y=f"{y[0]}:{y[1]}:{y[2]}", z=z)
        np.testing.assert_array_equal(cut.data, reference(dataset.arrays[var], t, x, y, z))
        assert cut.data.dtype == np.float32
        np.testing.assert_array_equal(cut.x_index, np.arange(*x) % NX)
        np.testing.assert_array_equal(cut.z, np.asarray(Z_COORDS)[np.arange(*z)])
        # Wrapped coordinates are shifted by whole periods, so they keep increasing.
        np.testing.assert_allclose(cut.x, 0.25 * np.arange(*x))
        np.testing.assert_allclose(cut.y, -1.0 + 0.5 * np.arange(*y))
        assert cut.time == dataset.meta.times[t] and cut.strides == (x[2], y[2], z[2])


def test_blocks_concatenate_to_the_cutout(dataset):
    reader = dataset.reader()
    x, y, z = (-5, 37, 3), (3, 40, 1), (1, 10, 1)
    whole = read_cutout(reader, "velocity", 2, x, y, z).data
    blocks = list(iter_cutout_blocks(reader, "velocity", 2, x, y, z, max_bytes=1))
    assert len(blocks) > 1
    assert [b.z_start for b in blocks] == list(np.cumsum([0] + [len(b.data) for b in blocks[:-1]]))
    np.testing.assert_array_equal(np.concatenate([b.data for b in blocks]), whole)
    big = list(iter_cutout_blocks(reader, "velocity", 2, x, y, z))
    assert len(big) == 1


def chunks_touched(x: tuple, y: tuple, z: tuple, chunks=(8, 8, 4)) -> set:
    cx, cy, cz = chunks
    return {
        (iz // cz, iy // cy, ix // cx)
        for iz in np.arange(*z)
        for iy in np.arange(*y) % NY
        for ix in np.arange(*x) % NX
    }


@pytest.mark.parametrize(
    "x, y, z",
    [
        ((0, NX, 9), (0, NY, 9), (0, NZ, 5)),  # strides larger than the chunks: whole chunks skipped
        ((3, 4, 1), (0, NY, 100), (2, 3, 1)),  # stride larger than the grid
        ((0, 3 * NX, 1), (-NY, NY, 1), (0, NZ, 1)),  # every chunk, several times over: each read once
        ((17, 23, 1), (0, 1, 1), (8, 10, 1)),  # across the periodic seam only
    ],
)
def test_reads_only_the_chunks_that_hold_selected_points(zarr_dataset, x, y, z):
    reader = zarr_dataset.reader()
    cut = read_cutout(reader, "velocity", 1, x, y, z)
    np.testing.assert_array_equal(cut.data, reference(zarr_dataset.arrays["velocity"], 1, x, y, z))
    stats = reader.stats()
    want = chunks_touched(x, y, z)
    assert stats["chunks_read"] == len(want)
    # Stored (compressed) bytes of the touched chunks only: well below reading the whole time step.
    full = zarr_dataset.reader()
    read_cutout(full, "velocity", 1)
    all_chunks = 3 * 2 * 3  # ceil(10/4) * ceil(12/8) * ceil(20/8)
    assert full.stats()["chunks_read"] == all_chunks
    assert stats["bytes_read"] <= full.stats()["bytes_read"] * (len(want) + 1) / all_chunks + 4096


def test_stride_skips_chunks_compared_to_full_read(zarr_dataset):
    reader = zarr_dataset.reader()
    read_cutout(reader, "pressure", 0, x=(0, NX, 16), y=(0, NY, 16), z=(0, NZ, 8))
    assert reader.stats()["chunks_read"] == 2 * 1 * 2  # x in {0, 16}, y in {0}, z in {0, 8}


def test_plan_sizes_before_reading():
    meta = small_meta()
    assert cutout_shape(meta, "velocity", "0:20:2", (0, 12), None, ntimes=3) == (3, NZ, 12, 10, 3)
    assert cutout_nbytes(meta, "pressure", "-5:5", "::5", "3:4") == 4 * 10 * 3 * 1
    # Sizing a huge periodic request is arithmetic, not allocation.
    assert cutout_nbytes(meta, "pressure", (0, 10**9), (0, 10**9), (0, NZ)) == 4 * 10**18 * NZ


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("0:10:0", InvalidInput, "positive integer"),
        ("0:10:-1", InvalidInput, "Reversed ranges are not supported"),
        ("10:0", InvalidInput, "stop must be greater than start"),
        ("5:5", InvalidInput, "empty or reversed"),
        ("a:b", InvalidInput, "start:stop:step"),
        ("1.5:4", InvalidInput, "integer"),
        ("0:1:2:3", InvalidInput, "at most two colons"),
        ((1, 2, 3, 4), InvalidInput, "start:stop:step"),
        ((True, 3), InvalidInput, "integers"),
    ],
)
def test_bad_ranges_on_any_axis(spec, error, words):
    meta = small_meta()
    with pytest.raises(error, match=words) as info:
        plan_cutout(meta, "velocity", x=spec)
    assert "x" in str(info.value)


@pytest.mark.parametrize("spec", ["-1:4", "0:11", (5, 12), "9:20:3", -1])
def test_non_periodic_axis_rejects_out_of_bounds(spec):
    with pytest.raises(OutOfDomain, match=r"z is not periodic: the range must lie in \[0, 10\]"):
        plan_cutout(small_meta(), "velocity", z=spec)


def test_periodic_axis_accepts_wrapping_and_huge_but_bounded_indices():
    meta = small_meta()
    r = parse_range("-3:25:7", "x", meta.grid.x)
    assert list(r.indices()) == [17, 4, 11, 18]
    with pytest.raises(InvalidInput, match="within"):
        plan_cutout(meta, "velocity", x=(0, 2**41))


def test_range_spellings_agree():
    axis = small_meta().grid.x
    forms = ["2:14:3", (2, 14, 3), slice(2, 14, 3), [2, 14, 3], " 2 : 14 : 3 "]
    assert {parse_range(f, "x", axis).as_text() for f in forms} == {"2:14:3"}
    assert parse_range(None, "x", axis).as_text() == f"0:{NX}:1"
    assert parse_range(":", "x", axis).as_text() == f"0:{NX}:1"
    assert parse_range("::4", "x", axis).as_text() == f"0:{NX}:4"
    assert parse_range("7", "x", axis).as_text() == parse_range(7, "x", axis).as_text() == "7:8:1"


def test_unknown_variable_and_bad_time(dataset):
    with pytest.raises(NotFound, match="Did you mean 'velocity'"):
        plan_cutout(dataset.meta, "velocty")
    with pytest.raises(OutOfDomain, match=r"time index must be in \[0, 2\]"):
        read_cutout(dataset.reader(), "velocity", 3)
    assert time_index(dataset.meta, 0.5) == 1
    with pytest.raises(OutOfDomain, match="between stored times 0.5 and 1"):
        time_index(dataset.meta, 0.7)
    with pytest.raises(OutOfDomain, match=r"time must be in \[0, 1\]"):
        time_index(dataset.meta, 2.0)
