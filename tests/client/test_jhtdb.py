"""The givernylocal-shaped shim: getData returns DataFrames per time, getCutout takes 1-based inclusive ranges."""

from __future__ import annotations

import numpy as np

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
