"""One conformance suite for every storage back end (zarr, HDF5) and location (local, memory, S3).

Like zarr's ``testing/store.py``: :class:`StoreConformance` holds the tests; each subclass only names its
back end and location (the URL and storage options follow from them).
"""

from __future__ import annotations

import uuid
from typing import Any

import fsspec
import numpy as np
import pytest

from labservice.errors import CorruptData, InvalidInput, NotFound, OutOfDomain
from labservice.storage import ChunkCache, ChunkReader, DatasetMeta, create_store, open_store
from labservice.storage.base import FieldStore

NX, NY, NZ, NT = 40, 36, 20, 2  # deliberately not multiples of the chunk (8) or shard (16) sizes


def make_meta(dataset_id: str = "conf") -> DatasetMeta:
    return DatasetMeta.model_validate(
        {
            "id": dataset_id,
            "title": "conformance",
            "grid": {
                "x": {"size": NX, "start": 0.0, "step": 0.5, "periodic": True},
                "y": {"size": NY, "coordinates": list(np.cumsum(np.linspace(0.1, 0.3, NY))), "periodic": False},
                "z": {"size": NZ, "start": -1.0, "step": 0.25, "periodic": True},
            },
            "times": [0.0, 0.5],
            "variables": {
                "velocity": {"components": ["ux", "uy", "uz"], "units": "m/s"},
                "pressure": {"components": ["p"], "dtype": "float64"},
            },
            "chunks": (8, 8, 8),
            "shards": (16, 16, 16),
            "provenance": {"made_by": "test"},
        }
    )


def field(meta: DatasetMeta, variable: str, seed: int = 0) -> np.ndarray:
    dtype = meta.variables[variable].dtype
    return np.random.default_rng(seed).standard_normal(meta.array_shape(variable)).astype(dtype)


def bits(a: np.ndarray) -> np.ndarray:
    """View as unsigned ints so equality is bit-identity (NaN payloads, signed zeros)."""
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


SUFFIX = {"zarr": ".zarr", "hdf5": ".h5"}


class StoreConformance:
    """Tests every back end and location must pass. Subclasses set ``backend`` and ``where``."""

    backend: str
    where: str  # "local", "memory" or "s3"

    @pytest.fixture
    def url(self, request: pytest.FixtureRequest, tmp_path: Any) -> str:
        name = "ds" + SUFFIX[self.backend]
        if self.where == "local":
            return str(tmp_path / name)
        if self.where == "memory":
            return f"memory://labservice-tests/{uuid.uuid4().hex}/{name}"
        return f"{request.getfixturevalue('s3_url')}/{name}"

    @pytest.fixture
    def storage_options(self, request: pytest.FixtureRequest) -> dict[str, Any] | None:
        return request.getfixturevalue("s3_server").storage_options if self.where == "s3" else None

    # -- helpers -----------------------------------------------------------------------------------
    def filled(self, url: str, so: dict[str, Any] | None) -> tuple[FieldStore, dict[str, np.ndarray]]:
        """Create a dataset, write every variable in uneven boxes, close it and reopen it read-only."""
        meta = make_meta()
        store = create_store(url, meta, backend=self.backend, storage_options=so)
        data = {v: field(meta, v, seed=i) for i, v in enumerate(meta.variables)}
        for v, arr in data.items():
            for t in range(NT):
                # Boxes that cut across chunks and shards, to exercise partial writes.
                for z0, z1 in ((0, 11), (11, NZ)):
                    for x0, x1 in ((0, 21), (21, NX)):
                        store.write_box(v, t, z0, 0, x0, arr[t, z0:z1, :, x0:x1])
        store.close()
        return open_store(url, storage_options=so), data

    def corrupt_first_chunk(self, url: str, so: dict[str, Any] | None, variable: str, t: int) -> None:
        """Flip bytes inside the stored data of inner chunk (0, 0, 0), directly in the file or object."""
        fs, root = fsspec.core.url_to_fs(url, **(so or {}))
        if self.backend == "zarr":
            path, offset = f"{root}/{variable}/c/{t}/0/0/0/0", 100  # Morton order: chunk (0,0,0) first
        else:
            import h5py

            path = root
            with fs.open(path, "rb") as fh, h5py.File(fh, "r") as f:
                offset = f[variable].id.get_chunk_info_by_coord((t, 0, 0, 0, 0)).byte_offset + 100
        raw = bytearray(fs.cat_file(path))
        raw[offset : offset + 4] = bytes(b ^ 0xFF for b in raw[offset : offset + 4])
        fs.pipe_file(path, bytes(raw))

    # -- tests -------------------------------------------------------------------------------------
    def test_metadata_round_trip(self, url: str, storage_options: dict[str, Any] | None) -> None:
        meta = make_meta()
        store = create_store(url, meta, backend=self.backend, storage_options=storage_options)
        assert store.backend == self.backend
        store.close()
        opened = open_store(url, storage_options=storage_options, mode="r+")
        assert opened.meta == meta
        assert opened.url == url and opened.storage_options == storage_options  # enough to reopen elsewhere
        assert opened.meta.grid.y.coords().tolist() == meta.grid.y.coords().tolist()
        new = meta.model_copy(update={"provenance": {"made_by": "test", "ingested": 2}})
        opened.update_meta(new)
        opened.close()
        again = open_store(url, storage_options=storage_options)
        assert again.meta.provenance == {"made_by": "test", "ingested": 2}
        again.close()

    def test_create_refuses_to_overwrite_unless_asked(self, url: str, storage_options: dict[str, Any] | None) -> None:
        create_store(url, make_meta(), backend=self.backend, storage_options=storage_options).close()
        with pytest.raises(InvalidInput, match="overwrite=True"):
            create_store(url, make_meta(), backend=self.backend, storage_options=storage_options)
        create_store(url, make_meta("other"), backend=self.backend, storage_options=storage_options,
                     overwrite=True).close()
        assert open_store(url, storage_options=storage_options).meta.id == "other"

    def test_missing_dataset_is_not_found(self, url: str, storage_options: dict[str, Any] | None) -> None:
        with pytest.raises(NotFound):
            open_store(url, storage_options=storage_options)

    def test_round_trip_random_boxes_bit_identical(self, url: str, storage_options: dict[str, Any] | None) -> None:
        store, data = self.filled(url, storage_options)
        rng = np.random.default_rng(1)
        for _ in range(12):
            v = str(rng.choice(list(data)))
            t = int(rng.integers(NT))
            lo = [int(rng.integers(n)) for n in (NZ, NY, NX)]
            hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, (NZ, NY, NX), strict=False)]
            got = store.read_box(v, t, *(slice(a, b) for a, b in zip(lo, hi, strict=False)))
            want = data[v][t, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(bits(got), bits(want))
        store.close()

    def test_unwritten_values_are_nan(self, url: str, storage_options: dict[str, Any] | None) -> None:
        meta = make_meta()
        store = create_store(url, meta, backend=self.backend, storage_options=storage_options)
        block = np.ones((4, 5, 6, 3), dtype=np.float32)
        store.write_box("velocity", 1, 2, 3, 4, block)
        store.close()
        store = open_store(url, storage_options=storage_options)
        box = store.read_box("velocity", 1, slice(0, 8), slice(0, 10), slice(0, 12))
        assert np.all(box[2:6, 3:8, 4:10] == 1.0)
        assert np.isnan(box).sum() == box.size - block.size
        reader = ChunkReader(store, ChunkCache(1 << 20))
        np.testing.assert_array_equal(reader.region("velocity", 1, (0, 0, 0), (8, 10, 12)), box)
        assert np.isnan(reader.region("velocity", 0, (0, 0, 0), (3, 3, 3))).all()
        store.close()

    def test_bad_requests_say_what_to_change(self, url: str, storage_options: dict[str, Any] | None) -> None:
        store = create_store(url, make_meta(), backend=self.backend, storage_options=storage_options)
        with pytest.raises(NotFound, match="Did you mean 'velocity'"):
            store.read_box("velocty", 0, slice(0, 1), slice(0, 1), slice(0, 1))
        with pytest.raises(InvalidInput, match=r"time index must be in \[0, 1\]; got 5"):
            store.read_box("velocity", 5, slice(0, 1), slice(0, 1), slice(0, 1))
        with pytest.raises(InvalidInput, match=r"x range must lie in \[0, 40\]"):
            store.read_box("velocity", 0, slice(0, 1), slice(0, 1), slice(30, 41))
        with pytest.raises(InvalidInput, match=r"shape \(nz, ny, nx, 3\)"):
            store.write_box("velocity", 0, 0, 0, 0, np.zeros((2, 2, 2, 1), dtype=np.float32))
        store.close()

    def test_shard_marks_are_durable(self, url: str, storage_options: dict[str, Any] | None) -> None:
        store = create_store(url, make_meta(), backend=self.backend, storage_options=storage_options)
        assert not store.shard_done("velocity", 1, (1, 0, 2))
        store.mark_shard_done("velocity", 1, (1, 0, 2))
        assert store.shard_done("velocity", 1, (1, 0, 2))
        with pytest.raises(InvalidInput, match="shard index"):
            store.mark_shard_done("velocity", 1, (2, 0, 0))  # only 2 shards along z (20 / 16)
        store.close()
        reopened = open_store(url, storage_options=storage_options)
        assert reopened.shard_done("velocity", 1, (1, 0, 2))
        for other in [("velocity", 0, (1, 0, 2)), ("velocity", 1, (0, 0, 2)), ("pressure", 1, (1, 0, 2))]:
            assert not reopened.shard_done(*other)
        reopened.close()

    def test_region_wraps_like_numpy_take(self, url: str, storage_options: dict[str, Any] | None) -> None:
        store, data = self.filled(url, storage_options)
        reader = ChunkReader(store, ChunkCache(64 << 20))
        rng = np.random.default_rng(2)
        for _ in range(10):
            v = str(rng.choice(list(data)))
            t = int(rng.integers(NT))
            z0, x0 = int(rng.integers(-30, 30)), int(rng.integers(-50, 50))
            z1, x1 = z0 + int(rng.integers(1, 45)), x0 + int(rng.integers(1, 90))  # may exceed one period
            y0 = int(rng.integers(0, NY))
            y1 = int(rng.integers(y0 + 1, NY + 1))
            got = reader.region(v, t, (z0, y0, x0), (z1, y1, x1))
            want = np.take(data[v][t], np.arange(z0, z1), axis=0, mode="wrap")[:, y0:y1]
            want = np.take(want, np.arange(x0, x1), axis=2, mode="wrap")
            np.testing.assert_array_equal(bits(got), bits(want))
        small = reader.region("velocity", 0, (9, 9, 9), (12, 12, 12))  # inside one chunk: the fast path
        np.testing.assert_array_equal(small, data["velocity"][0, 9:12, 9:12, 9:12])
        small[...] = 0  # a fresh array, never a view of the cache
        np.testing.assert_array_equal(reader.region("velocity", 0, (9, 9, 9), (12, 12, 12)),
                                      data["velocity"][0, 9:12, 9:12, 9:12])
        with pytest.raises(OutOfDomain, match="non-periodic y axis"):
            reader.region("velocity", 0, (0, -1, 0), (2, 2, 2))
        with pytest.raises(OutOfDomain, match="non-periodic y axis"):
            reader.region("velocity", 0, (0, NY - 1, 0), (2, NY + 1, 2))
        store.close()

    def test_reader_reads_only_touched_chunks(self, url: str, storage_options: dict[str, Any] | None) -> None:
        store, data = self.filled(url, storage_options)
        reader = ChunkReader(store, ChunkCache(64 << 20))
        reader.region("velocity", 1, (14, 14, 14), (18, 18, 18))  # a 4^3 stencil across 2x2x2 chunks
        s = reader.stats()
        assert s["chunks_read"] == 8 and s["cache_misses"] == 8 and s["cache_hits"] == 0
        chunk_bytes = 8 * 8 * 8 * 3 * 4
        assert 8 * chunk_bytes <= s["bytes_read"] <= 8 * chunk_bytes + 8 * 1024  # data plus small indexes
        reader.region("velocity", 1, (15, 15, 15), (17, 17, 17))
        s2 = reader.stats()
        assert s2["chunks_read"] == 8 and s2["cache_hits"] == 8 and s2["bytes_read"] == s["bytes_read"]
        c = reader.chunk("velocity", 1, (2, 4, 4))  # the last chunks along z and y are clipped to the grid
        np.testing.assert_array_equal(c, data["velocity"][1, 16:20, 32:36, 32:40])
        assert not c.flags.writeable
        store.close()

    def test_corrupt_chunk_is_reported_never_served(self, url: str, storage_options: dict[str, Any] | None) -> None:
        store, _ = self.filled(url, storage_options)
        store.close()
        self.corrupt_first_chunk(url, storage_options, "velocity", 1)
        store = open_store(url, storage_options=storage_options)
        pattern = r"dataset 'conf'.*variable 'velocity', time index 1, inner chunk \(iz, iy, ix\)=\(0, 0, 0\)"
        with pytest.raises(CorruptData, match=pattern):
            store.read_box("velocity", 1, slice(0, 12), slice(0, 12), slice(0, 12))
        reader = ChunkReader(store, ChunkCache(64 << 20))
        with pytest.raises(CorruptData, match=pattern):
            reader.region("velocity", 1, (-2, 0, -2), (3, 3, 3))
        # Other chunks and time steps are still served.
        assert reader.region("velocity", 0, (0, 0, 0), (3, 3, 3)).shape == (3, 3, 3, 3)
        assert reader.region("velocity", 1, (8, 8, 8), (10, 10, 10)).shape == (2, 2, 2, 3)
        store.close()


class TestZarrLocal(StoreConformance):
    backend, where = "zarr", "local"

    def test_stock_zarr_reads_the_dataset(self, url: str) -> None:
        import zarr

        store, data = self.filled(url, None)
        store.close()
        group = zarr.open_group(url, mode="r")
        assert sorted(group.keys()) == ["pressure", "velocity"]
        assert group["velocity"][1, 3, 4, 5, 2] == data["velocity"][1, 3, 4, 5, 2]
        np.testing.assert_array_equal(group["pressure"][0], data["pressure"][0])
        assert group.attrs["labservice"]["id"] == "conf"


class TestZarrMemory(StoreConformance):
    backend, where = "zarr", "memory"


@pytest.mark.s3
class TestZarrS3(StoreConformance):
    backend, where = "zarr", "s3"


class TestHDF5Local(StoreConformance):
    backend, where = "hdf5", "local"


class TestHDF5Memory(StoreConformance):
    backend, where = "hdf5", "memory"


@pytest.mark.s3
class TestHDF5S3(StoreConformance):
    backend, where = "hdf5", "s3"
