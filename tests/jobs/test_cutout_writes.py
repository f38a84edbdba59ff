"""How cutout jobs write and read their shards: pieces streamed and hashed as written, working shards left
unhashed, and the finalizer reading shards straight from their bytes (the same blocks zarr gives).

The parts run in this process (plan, run_part, finalize as the engine calls them, without Dask).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

import labservice
from labservice.errors import StorageUnavailable
from labservice.jobs import JobFront
from labservice.jobs.kinds import kind_of, parse_request
from labservice.jobs.scratch import Scratch


def pieces(seed: int) -> list:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(n).astype("<f4") for n in (1, 70_000, 3, 250_000, 0, 8)]
    return [memoryview(a).cast("B") for a in arrays] + [b"index", b""]


@pytest.mark.parametrize("seed", [0, 1])
def test_put_parts_hash_and_bytes_equal_the_joined_pieces(tmp_path, seed):
    s = Scratch(str(tmp_path))
    joined = b"".join(bytes(p) for p in pieces(seed))
    entry = s.put_parts("job", "a/b/0", iter(pieces(seed)))  # a generator, as run_part gives it
    assert (entry.size, entry.sha256) == (len(joined), hashlib.sha256(joined).hexdigest())
    assert s.read_bytes("job", "a/b/0") == joined
    unhashed = s.put_parts("job", "a/b/1", iter(pieces(seed)), checksum=False)
    assert (unhashed.size, unhashed.sha256) == (len(joined), "")
    assert s.read_bytes("job", "a/b/1") == joined


def test_put_parts_failing_midway_leaves_no_object(tmp_path):
    s = Scratch(str(tmp_path))

    def broken():
        yield b"x" * 100_000
        raise OSError("source went away")

    with pytest.raises(StorageUnavailable, match="source went away"):
        s.put_parts("job", "c/0", broken())
    assert s.list("job") == []
    assert not any(p.is_file() for p in (tmp_path / "job").rglob("*"))


def run_in_process(front: JobFront, request: dict) -> tuple[str, list[dict], list[dict]]:
    """(job id, part records, file entries) of a job run by hand the way the engine runs it."""
    rec = front.submit("tok", request)
    req = parse_request(rec.params)
    kind = kind_of(req)
    plan = kind.plan(front.context, rec.id, req)
    records = [kind.run_part(spec) for spec in plan.parts]
    return rec.id, records, kind.finalize(plan.final, records)


# Output chunks equal to the source's 16^3 chunks (read lazily while the shard is written), and a box that
# wraps in x (assembled by read_cutout first); 2 x 2 x 2 shards of 32^3 either way.
@pytest.mark.parametrize("x", [(0, 64), (8, 72)], ids=["aligned", "wrapped"])
def test_zarr_objects_carry_their_sha256_and_working_shards_none(tmp_path, synthetic_url, x):
    front = JobFront(
        tmp_path / "jobs.sqlite",
        str(tmp_path / "scratch"),
        shard_edge=32,
        chunk_edge=16,
        task_bytes=32**3 * 12,
    )
    box = {"x": list(x), "y": [0, 64], "z": [0, 48]}
    base = {"kind": "cutout", "dataset": synthetic_url, "variables": ["velocity"], "time_indices": [1]}
    job, records, files = run_in_process(front, base | box | {"formats": ["zarr"]})
    assert len(records) == 8
    manifest = json.loads(front.scratch.read_bytes(job, "manifest.json"))
    shards = [o for o in manifest["objects"] if o["name"].startswith("cutout.zarr/velocity/c/")]
    assert len(shards) == 8
    for o in manifest["objects"]:
        assert hashlib.sha256(front.scratch.read_bytes(job, o["name"])).hexdigest() == o["sha256"]
    ref = labservice.open_dataset(synthetic_url).cutout(
        "velocity", time=0.1, x=(*x, 1), y=(0, 64, 1), z=(0, 48, 1)
    )
    got = zarr.open_group(front.scratch.path(job, "cutout.zarr"), mode="r")["velocity"][0]
    np.testing.assert_array_equal(got, ref.data)

    # The same cutout as NetCDF only: its working shards are not hashed, and the file holds the same values.
    job2, records2, files2 = run_in_process(front, base | box | {"formats": ["netcdf"]})
    assert {e["sha256"] for r in records2 for e in r["files"]} == {""}
    assert [f["name"] for f in files2] == ["cutout.nc", "manifest.json"]
    nc = files2[0]
    assert hashlib.sha256(front.scratch.read_bytes(job2, "cutout.nc")).hexdigest() == nc["sha256"]
    import netCDF4

    with netCDF4.Dataset(front.scratch.path(job2, "cutout.nc")) as ds:
        np.testing.assert_array_equal(ds["velocity"][0], ref.data)


@pytest.mark.parametrize("planes", [False, True])
def test_shard_source_gives_the_blocks_zarr_gives(tmp_path, synthetic_url, planes):
    # Two variables with 3 and 1 components, two times, edge shards cut by the array's end in z, y and x.
    from labservice.cutout.formats.zarr import group_source
    from labservice.jobs.outputs import job_layout, shard_source, zarr_store

    front = JobFront(
        tmp_path / "jobs.sqlite",
        str(tmp_path / "scratch"),
        shard_edge=16,
        chunk_edge=8,
        task_bytes=16**3 * 12,
    )
    request = {
        "kind": "cutout",
        "dataset": synthetic_url,
        "variables": ["velocity", "pressure"],
        "time_indices": [2, 0],
        "x": [3, 40],
        "y": [-5, 20, 1],
        "z": [10, 41, 2],
        "formats": ["zarr"],
    }
    job, _, _ = run_in_process(front, request)
    group = zarr.open_group(zarr_store(front.scratch, job, "cutout.zarr", read_only=True), mode="r")
    layout = job_layout(labservice.open_dataset(synthetic_url).meta, dict(group.attrs))
    ours = shard_source(front.scratch, job, "cutout.zarr", layout)
    assert ours is not None and ours.chunks == (8, 8, 8)
    theirs = list(group_source(group, layout).blocks(planes))
    got = list(ours.blocks(planes))
    assert [(b.var, b.time, b.corner, b.data.shape) for b in got] == [
        (b.var, b.time, b.corner, b.data.shape) for b in theirs
    ]
    assert len(got) == (4 if planes else 4 * 2 * 3)  # (variables x times) x shards per array
    for a, b in zip(got, theirs, strict=True):
        assert a.data.dtype == b.data.dtype and a.data.tobytes() == b.data.tobytes()


def test_shard_source_refuses_damage_and_other_layouts(tmp_path, synthetic_url):
    from labservice.errors import CorruptData
    from labservice.jobs.outputs import job_layout, shard_source, zarr_store

    front = JobFront(tmp_path / "jobs.sqlite", str(tmp_path / "scratch"), shard_edge=16, chunk_edge=8)
    request = {
        "kind": "cutout",
        "dataset": synthetic_url,
        "variables": ["pressure"],
        "x": [0, 16],
        "y": [0, 16],
    }
    job, _, _ = run_in_process(front, request | {"z": [0, 16]})
    group = zarr.open_group(zarr_store(front.scratch, job, "cutout.zarr", read_only=True), mode="r")
    layout = job_layout(labservice.open_dataset(synthetic_url).meta, dict(group.attrs))
    shard = Path(front.scratch.path(job, "cutout.zarr/pressure/c/0/0/0/0/0"))
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 1  # one bit of the shard index
    shard.write_bytes(bytes(raw))
    with pytest.raises(CorruptData, match="index of the job's working shard"):
        list(shard_source(front.scratch, job, "cutout.zarr", layout).blocks())
    meta_path = Path(front.scratch.path(job, "cutout.zarr/pressure/zarr.json"))
    meta = json.loads(meta_path.read_text())
    meta["codecs"][0]["configuration"]["codecs"].append({"name": "crc32c"})
    meta_path.write_text(json.dumps(meta))
    assert shard_source(front.scratch, job, "cutout.zarr", layout) is None  # zarr reads that one
