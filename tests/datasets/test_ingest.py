"""Ingest round trips (every source layout), the HDF5 back end, resuming, bounded memory and the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tracemalloc

import h5py
import numpy as np
import pytest
import zarr

from labservice.datasets.ingest import ingest, ingest_descriptor, load_descriptor, shard_order
from labservice.errors import NotFound
from labservice.storage import open_store
from tests.plugin.sources import SHAPE, TIMES, write_sources


@pytest.mark.parametrize("order", ["zyx", "xyz"])
@pytest.mark.parametrize("layout", ["separate", "last", "first"])
@pytest.mark.parametrize("per_time_step", [True, False], ids=["file-per-step", "time-axis"])
def test_round_trip_is_bit_identical_through_stock_zarr(tmp_path, order, layout, per_time_step):
    src = write_sources(
        tmp_path,
        order=order,
        layout=layout,
        per_time_step=per_time_step,
        stretched=layout == "last",
        seed=hash((order, layout, per_time_step)) % 1000,
    )
    url = ingest_descriptor(src.descriptor, progress=False)
    assert url == str((tmp_path / "store" / "mysim").resolve())  # relative to the descriptor's folder
    group = zarr.open_group(url, mode="r")  # stock zarr-python, nothing of ours
    for name, want in src.expected.items():
        got = group[name][:]
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    # Single-element indexing exactly as a user would write it: [t, z, y, x, c].
    assert group["velocity"][2, 8, 11, 19, 1] == src.expected["velocity"][2, 8, 11, 19, 1]


def test_metadata_from_descriptor(tmp_path):
    src = write_sources(tmp_path, stretched=True)
    url = ingest_descriptor(src.descriptor, progress=False)
    meta = open_store(url).meta
    assert meta.id == "mysim" and meta.grid.shape == SHAPE
    assert meta.chunks == (8, 8, 8) and meta.shards == (16, 8, 8)
    assert [meta.grid.x.periodic, meta.grid.y.periodic, meta.grid.z.periodic] == [True, False, True]
    with h5py.File(tmp_path / "grid.h5") as f:
        np.testing.assert_array_equal(meta.grid.y.coords(), f["coords/y"][:])
    np.testing.assert_allclose(meta.times, [0.0, 0.002, 0.004], rtol=0, atol=1e-15)
    assert meta.variables["velocity"].components == ["ux", "uy", "uz"]
    assert meta.variables["velocity"].units == "m/s"
    assert meta.provenance["ingest"]["complete"] is True


def test_explicit_time_list_and_hdf5_backend(tmp_path):
    src = write_sources(tmp_path, order="xyz", source_dtype="float32")
    src.rewrite(times=[0.5, 0.75, 2.0], backend="hdf5", store="out.h5")
    url = ingest_descriptor(src.descriptor, progress=False)
    store = open_store(url)
    assert store.backend == "hdf5" and store.meta.times == [0.5, 0.75, 2.0]
    nx, ny, nz = SHAPE
    for t in range(TIMES):
        got = store.read_box("velocity", t, slice(0, nz), slice(0, ny), slice(0, nx))
        np.testing.assert_array_equal(got, src.expected["velocity"][t])
    store.close()


def test_resume_after_a_missing_file_skips_finished_shards(tmp_path):
    src = write_sources(tmp_path)
    last = tmp_path / "out" / "snap_0002.h5"
    shutil.move(last, tmp_path / "held_back.h5")
    with pytest.raises(NotFound, match=r"snap_0002\.h5") as err:
        ingest_descriptor(src.descriptor, progress=False)
    assert "velocity" in err.value.message and "time index 2" in err.value.message

    url = str(tmp_path / "store" / "mysim")
    store = open_store(url)
    assert store.meta.provenance["ingest"]["complete"] is False
    meta = store.meta
    per_step = {v: len(shard_order(meta, v)) for v in meta.variables}
    assert all(
        store.shard_done(v, t, s) for v in meta.variables for t in (0, 1) for s in shard_order(meta, v)
    )
    assert not any(store.shard_done(v, 2, s) for v in meta.variables for s in shard_order(meta, v))
    store.close()

    # Fix the sources, and change time step 0 on disk: a resumed run must not rewrite finished shards.
    shutil.move(tmp_path / "held_back.h5", last)
    with h5py.File(tmp_path / "out" / "snap_0000.h5", "r+") as f:
        f["fields/u"][...] = 1234.0
    desc = load_descriptor(src.descriptor)
    stats = ingest(desc, src.descriptor.parent, progress=False, descriptor=src.descriptor)
    assert stats.shards_written == sum(per_step.values())  # only time step 2
    assert stats.shards_skipped == 2 * sum(per_step.values())
    group = zarr.open_group(url, mode="r")
    np.testing.assert_array_equal(group["velocity"][:], src.expected["velocity"])  # t=0 kept its first values
    assert open_store(url).meta.provenance["ingest"]["complete"] is True

    again = ingest(desc, src.descriptor.parent, progress=False, descriptor=src.descriptor)
    assert again.shards_written == 0 and again.shards_skipped == 3 * sum(per_step.values())

    redo = ingest(desc, src.descriptor.parent, overwrite=True, progress=False, descriptor=src.descriptor)
    assert redo.shards_written == 3 * sum(per_step.values())
    assert np.all(zarr.open_group(url, mode="r")["velocity"][0, ..., 0] == 1234.0)


def test_memory_stays_bounded_by_one_shard(tmp_path):
    """Peak traced memory is a small multiple of one shard, far below the field's size."""
    n = 64
    field = np.random.default_rng(3).standard_normal((3, n, n, n)).astype(np.float32)
    with h5py.File(tmp_path / "big_0000.h5", "w") as f:
        for name, comp in zip("uvw", field, strict=True):
            f.create_dataset(name, data=comp, chunks=(16, 16, 16))
    (tmp_path / "big.yaml").write_text(
        "id: big\ntitle: big\n"
        f"grid: {{shape: [{n}, {n}, {n}], x: {{start: 0, step: 1}}, y: {{start: 0, step: 1}}, "
        "z: {start: 0, step: 1}, periodic: [true, true, true]}\n"
        "times: [0.0]\n"
        "variables: {velocity: {components: [ux, uy, uz], source: {files: 'big_{t:04d}.h5', datasets: [/u, /v, /w]}}}\n"
        "store: big_store\nchunks: [16, 16, 16]\nshards: [16, 16, 16]\n"
    )
    desc = load_descriptor(tmp_path / "big.yaml")
    # Warm up (imports, numba compilation, codec set-up) outside the traced window.
    ingest(desc.model_copy(update={"store": "warm_store"}), tmp_path, progress=False)
    tracemalloc.start()
    try:
        ingest(desc, tmp_path, progress=False, descriptor=tmp_path / "big.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    shard_bytes = 16**3 * 3 * 4
    assert peak < field.nbytes / 4, (peak, field.nbytes)
    assert peak < 40 * shard_bytes, (peak, shard_bytes)
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "big_store"))["velocity"][0], np.moveaxis(field, 0, -1)
    )


def test_cli_ingests_and_reports_errors_in_one_line(tmp_path):
    src = write_sources(tmp_path)
    ok = subprocess.run(
        [sys.executable, "-m", "labservice", "ingest", str(src.descriptor), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ingested" in ok.stdout and "mysim" in ok.stdout
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "store" / "mysim"))["pressure"][:], src.expected["pressure"]
    )
    src.rewrite(variabels=src.doc.pop("variables"))
    bad = subprocess.run(
        [sys.executable, "-m", "labservice", "ingest", str(src.descriptor)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    assert "unknown key 'variabels'" in bad.stderr and "Did you mean 'variables'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.s3
def test_ingest_into_seaweedfs_s3(tmp_path, s3_server, s3_url):
    src = write_sources(tmp_path, order="xyz")
    src.rewrite(store=s3_url, storage_options=s3_server.storage_options)
    assert ingest_descriptor(src.descriptor, progress=False) == s3_url
    store = open_store(s3_url, storage_options=s3_server.storage_options)
    assert store.meta.provenance["ingest"]["complete"] is True
    nx, ny, nz = SHAPE
    np.testing.assert_array_equal(
        store.read_box("velocity", 1, slice(0, nz), slice(0, ny), slice(0, nx)), src.expected["velocity"][1]
    )
    # Resuming against S3 finds every shard mark and writes nothing.
    desc = load_descriptor(src.descriptor)
    assert ingest(desc, tmp_path, progress=False, descriptor=src.descriptor).shards_written == 0
