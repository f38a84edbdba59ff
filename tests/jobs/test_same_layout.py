"""One region cut synchronously (the function the /cutout route streams from) and as a job: the files read
back the same in h5py, xarray and VTK's XDMF reader (arrays, coordinates, attributes)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from labservice.cutout.formats import stream_cutout
from labservice.cutout.layout import layout_for
from labservice.cutout.region import plan_cutout
from labservice.storage import ChunkCache, ChunkReader, open_store

pytestmark = pytest.mark.dask

VARIABLES = ["velocity", "pressure"]
TIMES = [0, 2]
RANGES = {"x": [0, 64, 3], "y": [-5, 30, 1], "z": [10, 41, 2]}  # y wraps


@pytest.fixture(scope="module")
def both(engine, synthetic_url, tmp_path_factory):
    """Folders holding ``cutout.h5`` (+ XDMF), ``cutout.nc`` and a zarr, from each path."""
    req = {
        "kind": "cutout",
        "dataset": synthetic_url,
        "variables": VARIABLES,
        "time_indices": TIMES,
        **RANGES,
    }
    rec = engine.wait(engine.submit("tokL", req | {"formats": ["zarr", "hdf5", "netcdf"]}).id, timeout=120)
    assert rec.status == "done", rec.error
    job = Path(engine.scratch.path(rec.id))

    sync = tmp_path_factory.mktemp("sync")
    reader = ChunkReader(open_store(synthetic_url), cache=ChunkCache(1 << 26))
    plans = [plan_cutout(reader.meta, v, *(tuple(RANGES[a]) for a in "xyz")) for v in VARIABLES]
    layout = layout_for(reader, plans, TIMES)
    for fmt, name in [
        ("hdf5", "cutout.h5"),
        ("xdmf", "cutout.xdmf"),
        ("netcdf", "cutout.nc"),
        ("zarr", "z.zip"),
    ]:
        (sync / name).write_bytes(b"".join(stream_cutout(reader, layout, fmt, name="cutout", max_bytes=1)))
    with zipfile.ZipFile(sync / "z.zip") as z:
        z.extractall(sync / "cutout.zarr")
    return {"sync": sync, "job": job}


def h5_tree(path) -> dict:
    """Every dataset's values, attributes and dimension scales, and the root attributes."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
        for name, d in f.items():
            attrs = {
                k: np.asarray(v).tolist()
                for k, v in d.attrs.items()
                if k not in ("DIMENSION_LIST", "REFERENCE_LIST")  # object references, file-specific
            }
            scales = [(dim.label, [s.name for s in dim.values()]) for dim in d.dims]
            out[name] = (d[()], attrs, scales, d.is_scale)
    return out


def test_hdf5_reads_back_the_same_in_h5py(both):
    sync, job = (h5_tree(both[k] / "cutout.h5") for k in ("sync", "job"))
    assert sorted(sync) == sorted(job)
    assert sync["/"] == job["/"] and sync["/"]["variables"] == VARIABLES
    for name in sync:
        if name == "/":
            continue
        s, j = sync[name], job[name]
        np.testing.assert_array_equal(s[0], j[0], err_msg=name)
        assert s[0].dtype == j[0].dtype and s[1:] == j[1:], name
    assert sync["velocity"][2][0] == ("time", ["/time"]) and sync["velocity"][2][3] == ("x", ["/x"])
    assert sync["velocity"][0].shape == (2, 16, 35, 22, 3)


@pytest.mark.parametrize("fmt", ["cutout.nc", "cutout.zarr"])
def test_netcdf_and_zarr_read_back_identical_in_xarray(both, fmt):
    def open_(folder):
        path = folder / fmt
        return xr.open_zarr(path) if fmt.endswith(".zarr") else xr.open_dataset(path, engine="netcdf4")

    with open_(both["sync"]) as s, open_(both["job"]) as j:
        xr.testing.assert_identical(s.load(), j.load())  # values, coords, dims, every attribute
        assert s.velocity.dims == ("time", "z", "y", "x", "velocity_component")
        assert list(s["pressure_component"].values) == ["p"]
        assert list(s.velocity.attrs["components"]) == ["ux", "uy", "uz"]
        assert s.attrs["time_indices"] is not None and "x_index" in s.coords


def vtk_read(xdmf) -> list[dict]:
    """Each time step of an XDMF file as VTK reads it: time, geometry and point arrays."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline
    from vtkmodules.vtkIOXdmf2 import vtkXdmfReader

    reader = vtkXdmfReader()
    reader.SetFileName(str(xdmf))
    reader.UpdateInformation()
    times = reader.GetOutputInformation(0).Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS())
    steps = []
    for t in times:
        reader.UpdateTimeStep(t)
        grid = reader.GetOutputDataObject(0)
        pd = grid.GetPointData()
        arrays = {
            pd.GetArrayName(i): vtk_to_numpy(pd.GetArray(i)).copy() for i in range(pd.GetNumberOfArrays())
        }
        steps.append(
            {
                "time": t,
                "dims": tuple(grid.GetDimensions()),
                "bounds": tuple(grid.GetBounds()),
                "arrays": arrays,
            }
        )
    return steps


def test_xdmf_reads_back_the_same_in_vtk(both):
    sync, job = vtk_read(both["sync"] / "cutout.xdmf"), vtk_read(both["job"] / "cutout.xdmf")
    assert len(sync) == len(job) == 2
    with h5py.File(both["sync"] / "cutout.h5", "r") as f:
        velocity, pressure, times = f["velocity"][()], f["pressure"][()], f["time"][()]
    for k, (s, j) in enumerate(zip(sync, job, strict=True)):
        assert s["time"] == j["time"] == pytest.approx(times[k])
        assert s["dims"] == j["dims"] == (22, 35, 16)  # (nx, ny, nz)
        assert s["bounds"] == j["bounds"]
        assert sorted(s["arrays"]) == sorted(j["arrays"]) == ["pressure", "velocity"]
        for name in s["arrays"]:
            np.testing.assert_array_equal(s["arrays"][name], j["arrays"][name])
        # VTK's points run x fastest: the file's (z, y, x, component) order.
        np.testing.assert_array_equal(s["arrays"]["velocity"], velocity[k].reshape(-1, 3))
        np.testing.assert_array_equal(s["arrays"]["pressure"].ravel(), pressure[k].ravel())
