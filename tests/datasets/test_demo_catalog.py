"""Building demos (skip when present, resume, rebuild) and finding datasets (folder scan, YAML catalog)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from labservice.datasets.catalog import CatalogURL, discover, load_catalog
from labservice.datasets.demo.build import build_demos, is_built
from labservice.errors import InvalidInput, NotFound
from labservice.storage import create_store, open_store
from labservice.storage.metadata import Axis, DatasetMeta, Grid, Variable


def small_meta(dataset_id: str, **provenance) -> DatasetMeta:
    ax = Axis(size=4, periodic=True, start=0.0, step=1.0)
    return DatasetMeta(
        id=dataset_id,
        title=dataset_id,
        grid=Grid(x=ax, y=ax, z=ax),
        times=[0.0],
        variables={"p": Variable(components=["p"])},
        chunks=(4, 4, 4),
        shards=(4, 4, 4),
        provenance=provenance,
    )


@pytest.fixture(scope="module")
def channel_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo")
    lines = list(build_demos(data, only=["channel"]))
    return data, lines


def test_build_channel_demo_prints_progress_and_cleans_up(channel_dir):
    data, lines = channel_dir
    assert lines[0].startswith("channel64: building") and lines[-1].startswith("channel64: done")
    assert any("ingested 48 shards" in line for line in lines)
    assert is_built(data / "channel64")
    assert not (data / ".raw").exists()  # raw HDF5 removed after ingest
    assert sorted(p.name for p in data.iterdir()) == ["channel64"]


def test_present_demo_is_skipped(channel_dir):
    data, _ = channel_dir
    assert list(build_demos(data, only=["channel64"])) == [f"channel64: present at {data / 'channel64'}"]


def test_unfinished_demo_is_resumed_from_kept_raw_output(tmp_path):
    data = tmp_path / "data"
    gen = build_demos(data, only=["channel"])
    for line in gen:
        if "ingesting" in line:
            break  # stop just before ingest, as a crash would
    gen.close()
    assert (data / ".raw" / "channel64" / "channel64.yaml").is_file() and not is_built(data / "channel64")
    lines = list(build_demos(data, only=["channel"]))
    assert any("reusing the raw output" in line for line in lines)
    assert is_built(data / "channel64")


def test_unknown_demo_name():
    with pytest.raises(InvalidInput, match="unknown demo dataset 'chanel'.*Did you mean 'channel64'"):
        list(build_demos("/nonexistent", only=["chanel"]))


def test_discover_finds_zarr_and_hdf5_datasets_only(tmp_path, channel_dir):
    data, _ = channel_dir
    shutil.copytree(data / "channel64", tmp_path / "chan")
    create_store(str(tmp_path / "plain"), small_meta("plain"))
    create_store(str(tmp_path / "h5set.h5"), small_meta("h5set")).close()
    create_store(str(tmp_path / "half"), small_meta("half", ingest={"complete": False}))
    create_store(str(tmp_path / ".hidden"), small_meta("hidden"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "zarr.json").write_text("{}")  # looks like zarr, is not a dataset
    found = discover(tmp_path)
    assert sorted(found) == ["channel64", "h5set", "plain"]
    assert found["channel64"] == str((tmp_path / "chan").resolve())
    assert open_store(found["h5set"]).meta.id == "h5set"


def test_discover_missing_folder(tmp_path):
    with pytest.raises(NotFound, match="data folder"):
        discover(tmp_path / "nope")


def test_load_catalog(tmp_path, channel_dir):
    data, _ = channel_dir
    create_store(str(tmp_path / "sets" / "a"), small_meta("alpha"))
    catalog = tmp_path / "catalog.yaml"
    s3 = {"endpoint_url": "http://127.0.0.1:1", "key": "k", "secret": "s"}
    catalog.write_text(
        yaml.safe_dump(
            [
                {"url": "sets/a"},  # id read from the metadata; path relative to the catalog
                {"id": "chan", "url": str(data / "channel64")},
                {"id": "remote", "url": "s3://bucket/remote", "storage_options": s3},
            ]
        )
    )
    got = load_catalog(catalog)
    assert list(got) == ["alpha", "chan", "remote"]
    assert got["alpha"] == str((tmp_path / "sets" / "a").resolve())
    assert isinstance(got["remote"], CatalogURL) and got["remote"].storage_options == s3
    assert got["chan"].storage_options is None
    np.testing.assert_array_equal(open_store(got["chan"]).meta.grid.shape, (64, 65, 64))


@pytest.mark.parametrize(
    ("content", "error", "fragment"),
    [
        ("- {id: a, url: x}\n- {id: a, url: y}\n", InvalidInput, "id 'a' is listed twice"),
        ("- {id: a, path: x}\n", InvalidInput, "entry 1"),
        ("id: a\n", InvalidInput, "must be a YAML list"),
        ("- {url: missing_dataset}\n", NotFound, "no labservice dataset"),
    ],
)
def test_bad_catalogs(tmp_path, content, error, fragment):
    path = tmp_path / "catalog.yaml"
    path.write_text(content)
    with pytest.raises(error, match=fragment):
        load_catalog(path)
