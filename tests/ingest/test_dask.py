"""`labservice ingest --dask`: real scheduler and workers give the serial ingest's bytes, resume after a killed
client skips the finished shards, a SIGKILLed worker loses nothing, and S3 (SeaweedFS) works as a target."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
import zarr

from labservice.datasets.ingest import ingest, ingest_descriptor, load_descriptor
from labservice.errors import NotFound
from tests.plugin.sources import write_sources

pytestmark = [pytest.mark.dask, pytest.mark.slow]


def _tree(root: Path) -> dict[str, bytes]:
    """Every shard and shard mark of a zarr store, by path (the metadata holds timestamps)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


def _many_shards(folder: Path, n: int = 48, steps: int = 4) -> tuple[Path, np.ndarray]:
    """n^3 x 3 float32 per step in 8^3 shards: enough tasks (216 per step) to stop an ingest halfway."""
    folder.mkdir(parents=True, exist_ok=True)
    values = np.random.default_rng(7).standard_normal((steps, n, n, n, 3)).astype(np.float32)
    for t in range(steps):
        with h5py.File(folder / f"s_{t}.h5", "w") as f:
            for c, name in enumerate("uvw"):
                f.create_dataset(name, data=values[t, ..., c])
    axis = {"start": 0.0, "step": 1.0}
    doc = {
        "id": "many", "title": "many shards",
        "grid": {"shape": [n, n, n], "x": axis, "y": axis, "z": axis},
        "times": {"start": 0.0, "step": 1.0, "count": steps},
        "variables": {"velocity": {"components": ["ux", "uy", "uz"],
                                   "source": {"files": "s_{t}.h5", "datasets": ["/u", "/v", "/w"]}}},
        "store": "./store", "chunks": [4, 4, 4], "shards": [8, 8, 8],
    }  # fmt: skip
    path = folder / "many.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, values


def _marks(store: Path) -> set[Path]:
    return {p for p in (store / "velocity" / "done").rglob("*") if p.is_file()}


def _cli(descriptor: Path, address: str) -> subprocess.Popen:
    """The command in the background; its stderr goes to ``ingest.log`` beside the descriptor."""
    with open(descriptor.parent / "ingest.log", "wb") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "labservice", "ingest", str(descriptor), "--no-progress", "--dask", address],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


def _wait_idle(address: str, store: Path) -> None:
    """Until the cluster has run nothing for a second: the killed client's started tasks have finished and
    the scheduler has forgotten the rest."""
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        deadline = time.monotonic() + 60
        quiet_since, marks = time.monotonic(), len(_marks(store))
        while time.monotonic() - quiet_since < 1.0 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = len(_marks(store))
            if any(client.processing().values()) or now != marks:
                quiet_since, marks = time.monotonic(), now


def test_dask_ingest_gives_the_serial_bytes(tmp_path, dask_processes):
    src = write_sources(tmp_path / "a", order="xyz", layout="last", seed=3)
    serial = Path(ingest_descriptor(src.descriptor, progress=False, threads=1))
    src.rewrite(store="./store/dask")
    on_dask = Path(ingest_descriptor(src.descriptor, progress=False, dask=dask_processes.address))
    assert _tree(on_dask) == _tree(serial) and len(_tree(serial)) > 10
    group = zarr.open_group(str(on_dask), mode="r")
    for name, want in src.expected.items():
        np.testing.assert_array_equal(group[name][:], want)


def test_rerun_after_a_killed_client_skips_finished_shards(tmp_path, dask_processes):
    descriptor, values = _many_shards(tmp_path)
    store = tmp_path / "store"
    total = 4 * 6**3
    first = _cli(descriptor, dask_processes.address)
    deadline = time.monotonic() + 120
    while len(_marks(store)) < 40 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    _wait_idle(dask_processes.address, store)
    finished = _marks(store)
    assert 0 < len(finished) < total, "the ingest must be stopped halfway for this test to mean anything"
    shard_files = {m: store / "velocity" / "c" / m.parent.name / Path(*m.name.split(".")) / "0" for m in finished}
    before = {m: os.stat(f).st_ino for m, f in shard_files.items()}  # a rewrite renames a new file in

    stats = ingest(load_descriptor(descriptor), tmp_path, progress=False, descriptor=descriptor,
                   dask=dask_processes.address)  # fmt: skip
    assert stats.shards_skipped == len(finished)
    assert stats.shards_written == total - len(finished)
    assert {m: os.stat(f).st_ino for m, f in shard_files.items()} == before
    np.testing.assert_array_equal(zarr.open_group(str(store), mode="r")["velocity"][:], values)


def test_cli_with_a_local_cluster_and_a_bad_address(tmp_path):
    src = write_sources(tmp_path, seed=4)
    ok = subprocess.run(
        [sys.executable, "-m", "labservice", "ingest", str(src.descriptor), "--no-progress", "--dask", "local",
         "--threads", "2"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    group = zarr.open_group(str(tmp_path / "store" / "mysim"), mode="r")
    np.testing.assert_array_equal(group["velocity"][:], src.expected["velocity"])
    h5 = src.rewrite(store="out.h5")
    refused = subprocess.run(
        [sys.executable, "-m", "labservice", "ingest", str(h5), "--no-progress", "--dask", "local"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0 and "use the zarr back end" in refused.stderr
    assert not (tmp_path / "out.h5").exists()
    src.rewrite(store="./store/mysim")
    bad = subprocess.run(
        [sys.executable, "-m", "labservice", "ingest", str(src.descriptor), "--overwrite", "--no-progress",
         "--dask", "tcp://127.0.0.1:9"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.s3
def test_dask_ingest_to_seaweedfs(tmp_path, dask_processes, s3_server, s3_url):
    import s3fs

    src = write_sources(tmp_path, seed=5)
    local = Path(ingest_descriptor(src.descriptor, progress=False, threads=1))
    src.rewrite(store=s3_url, storage_options=s3_server.storage_options)
    assert ingest_descriptor(src.descriptor, progress=False, dask=dask_processes.address) == s3_url
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options)
    prefix = s3_url.removeprefix("s3://")
    remote = {k.removeprefix(prefix + "/"): fs.cat_file(k) for k in fs.find(prefix) if not k.endswith("zarr.json")}
    assert remote == _tree(local)
    group = zarr.open_group(zarr.storage.FsspecStore.from_url(s3_url, storage_options=s3_server.storage_options,
                                                              read_only=True), mode="r")  # fmt: skip
    np.testing.assert_array_equal(group["velocity"][:], src.expected["velocity"])


@pytest.mark.s3
def test_sources_on_s3_through_dask(tmp_path, dask_processes, s3_server, s3_url):
    """From S3 to S3: HDF5 sources read through fsspec give the bytes of a local serial ingest."""
    import s3fs

    src = write_sources(tmp_path, layout="first", seed=9)
    local = Path(ingest_descriptor(src.descriptor, progress=False, threads=1))
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options)
    prefix = s3_url.removeprefix("s3://")
    fs.put(str(tmp_path / "out"), f"{prefix}/in", recursive=True)
    for var in src.doc["variables"].values():
        var["source"]["files"] = f"{s3_url}/in/snap_{{t:04d}}.h5"
    src.rewrite(store=f"{s3_url}/store", storage_options=s3_server.storage_options)
    ingest_descriptor(src.descriptor, progress=False, dask=dask_processes.address)
    remote = {k.removeprefix(f"{prefix}/store/"): fs.cat_file(k) for k in fs.find(f"{prefix}/store")
              if not k.endswith("zarr.json")}  # fmt: skip
    assert remote == _tree(local)


def test_a_missing_file_is_the_same_clear_error_from_a_worker(tmp_path, dask_processes):
    src = write_sources(tmp_path, seed=2)
    (tmp_path / "out" / "snap_0002.h5").rename(tmp_path / "held_back.h5")
    with pytest.raises(NotFound, match=r"snap_0002\.h5") as err:
        ingest_descriptor(src.descriptor, progress=False, dask=dask_processes.address)
    assert "time index 2" in err.value.message
    (tmp_path / "held_back.h5").rename(tmp_path / "out" / "snap_0002.h5")
    ingest_descriptor(src.descriptor, progress=False, dask=dask_processes.address)  # resumes
    group = zarr.open_group(str(tmp_path / "store" / "mysim"), mode="r")
    np.testing.assert_array_equal(group["velocity"][:], src.expected["velocity"])


def test_a_sigkilled_worker_loses_nothing(tmp_path, dask_processes):
    """Last in the module: it kills one of the two workers (and starts a new one)."""
    descriptor, values = _many_shards(tmp_path)
    run = _cli(descriptor, dask_processes.address)
    deadline = time.monotonic() + 120
    while len(_marks(tmp_path / "store")) < 40 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_marks(tmp_path / "store")) < 4 * 6**3, "the worker must be killed mid-ingest"
    victim = dask_processes.workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    run.wait(timeout=300)
    dask_processes.workers[0] = dask_processes.add_worker()
    assert run.returncode == 0, (tmp_path / "ingest.log").read_text()
    assert len(_marks(tmp_path / "store")) == 4 * 6**3
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "store"), mode="r")["velocity"][:], values)
