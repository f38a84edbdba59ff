"""Descriptor parsing, and the message of every kind of mistake: each names the file and the field."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from labservice.datasets.ingest import Descriptor, TimeRange, build_meta, ingest_descriptor, load_descriptor
from labservice.errors import InvalidInput, LabError, NotFound

ISSUE_EXAMPLE = """
id: mysim
title: My simulation
grid:
  shape: [56, 48, 40]                 # nx, ny, nz
  x: {start: 0.0, step: 0.1122}       # a uniform axis
  y: {coordinates: grid.h5:/y}        # or explicit coordinates: HDF5 file:dataset, or an inline list
  z: {start: 0.0, step: 0.1571}
  periodic: [true, false, true]
times: {start: 0.0, step: 0.002, count: 3}   # or an explicit list
variables:
  velocity:
    components: [ux, uy, uz]
    units: m/s
    source: {files: "snap_{t:04d}.h5", datasets: [/u, /v, /w], order: zyx}   # t = time index
  pressure:
    components: [p]
    source: {files: "snap_{t:04d}.h5", datasets: [/p], order: zyx}
store: ./data/mysim                   # any fsspec URL
chunks: [32, 32, 32]                  # optional
shards: [256, 256, 256]               # optional
"""


def test_the_issue_example_parses(tmp_path):
    path = tmp_path / "mysim.yaml"
    path.write_text(ISSUE_EXAMPLE)
    desc = load_descriptor(path)
    assert isinstance(desc, Descriptor) and isinstance(desc.times, TimeRange)
    assert desc.grid.shape == (56, 48, 40) and desc.grid.periodic == (True, False, True)
    assert desc.time_values() == [0.0, 0.002, 0.004]
    assert desc.variables["velocity"].source.datasets == ["/u", "/v", "/w"]
    assert desc.variables["velocity"].source.per_time_step
    assert desc.chunks == (32, 32, 32) and desc.shards == (256, 256, 256)
    # The coordinates file resolves against the descriptor's folder.
    y = np.linspace(-1, 1, 48) ** 3
    with h5py.File(tmp_path / "grid.h5", "w") as f:
        f["y"] = y
    meta = build_meta(desc, tmp_path, path)
    np.testing.assert_array_equal(meta.grid.y.coords(), y)
    assert meta.grid.x.step == 0.1122 and meta.grid.array_shape == (40, 48, 56)


def test_inline_coordinates_and_time_list(tmp_path):
    text = ISSUE_EXAMPLE.replace(
        "{coordinates: grid.h5:/y}",
        "{coordinates: [" + ", ".join(str(v) for v in np.linspace(-1, 1, 48)) + "]}",
    ).replace("{start: 0.0, step: 0.002, count: 3}", "[0.1, 0.3, 0.7]")
    (tmp_path / "d.yaml").write_text(text)
    desc = load_descriptor(tmp_path / "d.yaml")
    meta = build_meta(desc, tmp_path)
    assert meta.times == [0.1, 0.3, 0.7] and meta.grid.y.coords()[-1] == 1.0


def _edit(old: str, new: str) -> str:
    assert old in ISSUE_EXAMPLE
    return ISSUE_EXAMPLE.replace(old, new)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (_edit("variables:", "varaibles:"), ["unknown key 'varaibles'", "Did you mean 'variables'"]),
        (
            _edit("datasets: [/p]", "dataset: [/p]"),
            [
                "variables.pressure.source.dataset",
                "Did you mean 'datasets'",
                "variables.pressure.source.datasets: this key is required",
            ],
        ),
        (
            _edit("order: zyx}   #", "order: yxz}   #"),
            ["variables.velocity.source.order", "'zyx' or 'xyz'", "'yxz'"],
        ),
        (_edit("store: ./data/mysim", ""), ["store: this key is required"]),
        (_edit("[56, 48, 40]", "[56, 48]"), ["grid.shape"]),
        (
            _edit("x: {start: 0.0, step: 0.1122}", "x: {start: 0.0, step: -0.1}"),
            ["grid.x.step", "greater than 0"],
        ),
        (_edit("x: {start: 0.0, step: 0.1122}", "x: {start: 0.0}"), ["grid.x", "either start and step"]),
        (
            _edit("datasets: [/u, /v, /w]", "datasets: [/u, /v]"),
            ["variables.velocity", "2 datasets for 3 components"],
        ),
        (
            _edit('"snap_{t:04d}.h5", datasets: [/p]', '"snap_{time}.h5", datasets: [/p]'),
            ["variables.pressure.source.files", "{t}"],
        ),
        (_edit("count: 3", "count: 0"), ["times"]),
        ("id: [unclosed\n", ["not valid YAML"]),
        ("- just\n- a list\n", ["must be a YAML mapping"]),
    ],
    ids=[
        "top-key",
        "nested-key",
        "order",
        "missing-store",
        "shape",
        "step",
        "half-axis",
        "ncomp",
        "pattern",
        "count",
        "yaml",
        "not-mapping",
    ],
)
def test_bad_descriptor_messages(tmp_path, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_descriptor(path)
    assert str(path) in err.value.message
    for fragment in fragments:
        assert fragment in err.value.message, err.value.message


def test_missing_descriptor(tmp_path):
    with pytest.raises(NotFound, match="descriptor file .*nope.yaml not found"):
        load_descriptor(tmp_path / "nope.yaml")


def test_missing_source_file_names_file_and_variable(sources, tmp_path):
    (tmp_path / "sim" / "out" / "snap_0000.h5").unlink()
    with pytest.raises(NotFound) as err:
        ingest_descriptor(sources.descriptor, progress=False)
    msg = err.value.message
    assert "snap_0000.h5 not found" in msg and "variable 'velocity'" in msg and "time index 0" in msg
    assert not (tmp_path / "sim" / "store" / "mysim").exists()  # nothing was created


def test_missing_dataset_in_file_names_dataset_component_and_file(sources, tmp_path):
    with h5py.File(tmp_path / "sim" / "out" / "snap_0000.h5", "r+") as f:
        f.move("fields/v", "fields/V")
    with pytest.raises(NotFound) as err:
        ingest_descriptor(sources.descriptor, progress=False)
    msg = err.value.message
    assert "has no dataset '/fields/v'" in msg and "component 'uy'" in msg and "snap_0000.h5" in msg
    assert "Did you mean '/fields/V'" in msg and "/fields/u" in msg


def test_shape_mismatch_names_dataset_and_expected_shape(sources, tmp_path):
    with h5py.File(tmp_path / "sim" / "out" / "snap_0000.h5", "r+") as f:
        del f["fields/p"]
        f["fields/p"] = np.zeros((9, 12, 19))
    with pytest.raises(InvalidInput) as err:
        ingest_descriptor(sources.descriptor, progress=False)
    msg = err.value.message
    assert "variable 'pressure'" in msg and "/fields/p" in msg and "snap_0000.h5" in msg
    assert "(9, 12, 19)" in msg and "expected (9, 12, 20) = (nz, ny, nx) for order zyx" in msg


def test_wrong_order_is_a_shape_mismatch(sources):
    sources.doc["variables"]["pressure"]["source"]["order"] = "xyz"
    sources.rewrite()
    with pytest.raises(InvalidInput, match=r"expected \(20, 12, 9\) = \(nx, ny, nz\) for order xyz"):
        ingest_descriptor(sources.descriptor, progress=False)


def test_time_axis_length_must_match_times(tmp_path):
    from tests.plugin.sources import write_sources

    src = write_sources(tmp_path, per_time_step=False)
    src.rewrite(times=[0.0, 1.0])
    with pytest.raises(
        InvalidInput, match=r"all_times\.h5 has shape \(3, 9, 12, 20\); expected \(2, 9, 12, 20\) = \(nt, nz"
    ):
        ingest_descriptor(src.descriptor, progress=False)


@pytest.mark.parametrize(
    ("setup", "error", "fragments"),
    [
        ("no-file", NotFound, ["grid.y.coordinates", "coords.h5 not found"]),
        ("no-dataset", NotFound, ["grid.y.coordinates", "has no dataset '/yy'", "/y"]),
        ("short", InvalidInput, ["grid.y", "coords.h5:/y", "11 values but size is 12", "ny = 12"]),
        ("unsorted", InvalidInput, ["grid.y", "strictly increasing"]),
        ("no-colon", InvalidInput, ["grid.y.coordinates", "file.h5:/dataset"]),
    ],
)
def test_coordinates_file_errors(sources, tmp_path, setup, error, fragments):
    y = np.linspace(-1, 1, 12)
    if setup != "no-file":
        with h5py.File(tmp_path / "sim" / "coords.h5", "w") as f:
            f["y"] = {"short": y[:-1], "unsorted": y[::-1]}.get(setup, y)
    spec = {"no-dataset": "coords.h5:/yy", "no-colon": "coords.h5"}.get(setup, "coords.h5:/y")
    sources.doc["grid"]["y"] = {"coordinates": spec}
    sources.rewrite()
    with pytest.raises(error) as err:
        ingest_descriptor(sources.descriptor, progress=False)
    for fragment in fragments:
        assert fragment in err.value.message, err.value.message


def test_existing_store_with_other_layout_is_not_overwritten(sources):
    ingest_descriptor(sources.descriptor, progress=False)
    sources.rewrite(times=[0.0, 0.5, 0.75])
    with pytest.raises(InvalidInput, match="different times; pass overwrite=True"):
        ingest_descriptor(sources.descriptor, progress=False)
    assert isinstance(ingest_descriptor(sources.descriptor, overwrite=True, progress=False), str)


def test_errors_are_lab_errors_not_tracebacks(sources):
    sources.doc["variables"]["velocity"]["source"]["files"] = "missing/snap_{t:04d}.h5"
    sources.rewrite()
    with pytest.raises(LabError):
        ingest_descriptor(sources.descriptor, progress=False)


def test_chunking_and_id_errors_come_from_the_metadata_schema(sources):
    sources.rewrite(shards=[12, 8, 8])
    with pytest.raises(
        InvalidInput, match="along x, shard size 12 must be a positive multiple of chunk size 8"
    ):
        ingest_descriptor(sources.descriptor, progress=False)
    sources.rewrite(shards=[16, 8, 8], id="bad id!")
    with pytest.raises(InvalidInput, match=r"id: String should match pattern .*; got 'bad id!'"):
        ingest_descriptor(sources.descriptor, progress=False)


def test_uppercase_variable_names_stay_in_the_key_path(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(_edit("  pressure:\n", "  P:\n").replace("order: zyx}\nstore", "order: zyz}\nstore"))
    with pytest.raises(InvalidInput, match=r"variables\.P\.source\.order"):
        load_descriptor(path)
