"""The givernylocal-shaped shim: getData returns DataFrames per time, getCutout takes 1-based inclusive ranges."""

from __future__ import annotations

import numpy as np
import pytest

from labclient import Lab
from labclient.jhtdb import getCutout, getData, turb_dataset

PTS = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [6.0, 0.5, 4.0]])


def test_get_data_one_time_and_series(server, local, big_token, tmp_path) -> None:
    ds = turb_dataset(dataset_title="periodic16", output_path=tmp_path, auth_token=big_token, url=server.url)
    (frame,) = getData(ds, "velocity", 0.2, "none", "lag4", "field", PTS)
    assert list(frame.columns) == ["ux", "uy", "uz"]
    np.testing.assert_array_equal(frame.to_numpy(), local["periodic16"].points("velocity", PTS, time=0.2))
    frames = getData(ds, "pressure", 0.0, "pchip", "lag6", "field", PTS, option=[0.4, 0.1])
    assert len(frames) == 5
    assert abs(frames[3].attrs["time"] - 0.3) < 1e-12
    np.testing.assert_array_equal(
        frames[0].to_numpy(),
        local["periodic16"].points("pressure", PTS, times=(0.0, 0.4, 0.1), spatial="lag6", temporal="pchip")[
            0
        ],
    )
    grads = getData(ds, "velocity", 0.1, "none", "fd4noint", "gradient", PTS)[0]
    assert grads.shape == (3, 9)


def test_get_data_position_tracks(server, local, tmp_path) -> None:
    ds = turb_dataset(dataset_title="periodic16", output_path=tmp_path, url=server.url)
    (final,) = getData(ds, "position", 0.0, "pchip", "lag4", "field", PTS, option=[0.2, 0.02])
    ref = local["periodic16"].track(PTS, 0.0, 0.2, 0.02)
    np.testing.assert_array_equal(final[["x", "y", "z"]].to_numpy(), ref.positions)


def test_get_cutout_uses_one_based_inclusive_ranges(server, big_token, tmp_path) -> None:
    ds = turb_dataset(dataset_title="periodic16", output_path=tmp_path, auth_token=big_token, url=server.url)
    out = getCutout(ds, "velocity", [[1, 16], [3, 10], [5, 5], [2, 3]], [2, 1, 1, 1])
    assert sorted(out.data_vars) == ["velocity_0002", "velocity_0003"]
    v = out["velocity_0002"]
    assert v.dims == ("zcoor", "ycoor", "xcoor", "values") and v.shape == (1, 8, 8, 3)
    direct = (
        Lab(server.url, token=big_token)
        .dataset("periodic16")
        .cutout("velocity", time=0.1, x=(0, 16, 2), y=(2, 10), z=(4, 5), as_numpy=True)
    )
    np.testing.assert_array_equal(v.values, direct["data"])
    np.testing.assert_allclose(v["xcoor"].values, direct["x"])


def test_star_imports_bring_what_givernylocal_notebooks_use() -> None:
    names: dict = {}
    exec(
        "from labclient.jhtdb.turbulence_dataset import *\nfrom labclient.jhtdb.turbulence_toolkit import *",
        names,
    )
    wanted = {"np", "pd", "plt", "go", "make_subplots", "math", "turb_dataset", "getData", "getCutout"}
    wanted |= {
        "write_interpolation_tsv_file",
        "write_cutout_hdf5_and_xmf_files",
        "cutout_values",
        "contour_plot",
    }
    assert wanted <= set(names)
    assert names["go"].Figure and names["make_subplots"] and names["plt"].figure and names["pd"].DataFrame


def test_tsv_has_jhtdb_header_and_options_are_accepted(server, tmp_path, capsys) -> None:
    import csv

    from labclient.jhtdb import JHTDB_TESTING_TOKEN, write_interpolation_tsv_file

    ds = turb_dataset("periodic16", str(tmp_path), JHTDB_TESTING_TOKEN, url=server.url)
    assert ds.auth_token is None  # the testing token means default (public) access
    frames, times = getData(
        ds,
        "velocity",
        0.1,
        "none",
        "fd4noint",
        "gradient",
        PTS,
        return_times=True,
        trace_memory=True,
        verbose=True,
    )
    printed = capsys.readouterr().out
    assert "getData" in printed and "[current, peak]" in printed
    assert times.tolist() == [0.1] and frames[0].index.name == "index"
    write_interpolation_tsv_file(ds, PTS, frames, "grad")
    with open(tmp_path / "grad.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    head = "dataset: periodic16, variable: velocity, time: 0.1, temporal method: none, spatial method: fd4noint, "
    assert rows[0] == [head + "spatial operator: gradient"] + [""] * 12
    assert (
        rows[1][:6] == ["time", "x_point", "y_point", "z_point", "duxdx", "duxdy"] and rows[1][-1] == "duzdz"
    )
    np.testing.assert_allclose(np.array(rows[2:], dtype=float)[:, 4:], frames[0].to_numpy(), rtol=1e-6)
    (final,), start = getData(
        ds, "position", 0.0, "pchip", "lag4", "field", PTS, [0.2, 0.02], return_times=True, verbose=False
    )
    assert start.tolist() == [0.0] and list(final.columns) == ["x", "y", "z"]  # givernylocal's start time


def test_giverny_2x_call_shapes_and_cutout_gizmos(server, big_token, tmp_path) -> None:
    import h5py

    from labclient.jhtdb import cutout_values, write_cutout_hdf5_and_xmf_files

    ds = turb_dataset("periodic16", tmp_path, big_token, url=server.url)
    new = getCutout(
        ds, "pressure", np.array([[1, 8], [1, 8], [3, 6], [4, 4]]), np.array([1, 2, 1, 1]), verbose=False
    )
    old = getCutout(ds, "pressure", 4, np.array([[1, 8], [1, 8], [3, 6]]), np.array([1, 2, 1]), verbose=False)
    assert new.identical(old) and list(new.data_vars) == ["pressure_0004"]
    assert (
        new.attrs["y_step"] == 2 and new.attrs["z_start"] == 3 and new["pressure_0004"].shape == (4, 4, 8, 1)
    )
    one = cutout_values(
        ds, 5, 3, 4, new, 4, np.array([[1, 8], [1, 8], [3, 6], [4, 4]]), np.array([1, 2, 1, 1])
    )
    assert one.shape == (1, 1, 1, 1)
    assert one.values.item() == new["pressure_0004"].values[1, 1, 4, 0]  # z 4 -> 1, y 3 -> 1, x 5 -> 4
    with pytest.raises(Exception, match="stride"):
        cutout_values(ds, 5, 2, 4, new, 4, None, None)  # y = 2 is not on the stride from 1
    h5, xmf = write_cutout_hdf5_and_xmf_files(ds, new, np.array([[1, 8], [1, 8], [3, 6]]), "p")  # 2.x shape
    with h5py.File(h5) as f:
        assert f["pressure_0004"].shape == (4, 4, 8, 1) and f["xcoor"].shape == (8,)
    assert 'AttributeType="Scalar"' in xmf.read_text() and "p.h5:/pressure_0004" in xmf.read_text()
