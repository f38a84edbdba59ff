"""A givernylocal notebook runs after changing only its import lines (issue 22, section 1).

``givernylocal_channel.ipynb`` here is the notebook as a JHTDB user writes it (``from givernylocal... import
*``). The test rewrites only those import lines, checks that the result is exactly the committed
``examples/07_jhtdb_channel.ipynb`` (code cells), runs it against a real server on the demo data (channel64:
JHTDB's channel layout, walls at y = +-1 on a stretched grid), and checks the files the gizmos wrote: the TSV
with JHTDB's header, the HDF5 + XMF pair, and the contour plot.
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import h5py
import nbformat
import numpy as np
import pytest

from examples import run_all as runner

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "givernylocal_channel.ipynb"
PORTED = runner.HERE / "07_jhtdb_channel.ipynb"
IMPORT_LINE = re.compile(r"^from givernylocal\.(turbulence_dataset|turbulence_toolkit) import \*$", re.M)


def port(nb: nbformat.NotebookNode) -> int:
    """Rewrite givernylocal's two star imports to labclient.jhtdb's, in place; return the lines changed."""
    changed = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source, n = IMPORT_LINE.subn(r"from labclient.jhtdb.\1 import *", cell.source)
            changed += n
    return changed


def _code(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_committed_notebook_is_the_source_with_only_its_imports_changed() -> None:
    source = nbformat.read(SOURCE, as_version=4)
    before = _code(source)
    assert port(source) == 2
    after = _code(source)
    differing = [
        (a, b)
        for old, new in zip(before, after, strict=True)
        for a, b in zip(old.splitlines(), new.splitlines(), strict=True)
        if a != b
    ]
    assert [a for a, _ in differing] == [
        "from givernylocal.turbulence_dataset import *",
        "from givernylocal.turbulence_toolkit import *",
    ]
    assert after == _code(nbformat.read(PORTED, as_version=4))


@pytest.fixture(scope="module")
def server_env(built_demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with runner.private_server(built_demo_data, tmp_path_factory.mktemp("jhtdb-server")) as env:
        yield env


@pytest.mark.slow
@pytest.mark.dask
def test_ported_notebook_runs_and_writes_jhtdb_files(server_env: dict[str, str], tmp_path: Path) -> None:
    nb = nbformat.read(SOURCE, as_version=4)
    port(nb)
    path = tmp_path / "ported.ipynb"
    nbformat.write(nb, path)
    env = {**server_env, "LABSERVICE_TOKEN": ""}  # the testing token means default (public) access
    runner.execute(path, env=env, cwd=tmp_path)  # raises on a failing cell

    ran = nbformat.read(path, as_version=4)
    code = [c for c in ran.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # profile, plane, series, contour
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)  # go + make_subplots

    out = tmp_path / "giverny_output"
    with open(out / "channel-interpolation.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == [
        "dataset: channel64, variable: velocity, time: 0.1, time end: 0.5, delta t: 0.008, "
        "temporal method: pchip, spatial method: lag8, spatial operator: field",
        *[""] * 6,
    ]
    assert rows[1] == ["time", "x_point", "y_point", "z_point", "ux", "uy", "uz"]
    table = np.array(rows[2:], dtype=float)
    assert table.shape == (51, 7)  # 0.1 to 0.5 every 0.008, one point
    np.testing.assert_allclose(table[:, 0], 0.1 + 0.008 * np.arange(51), atol=1e-12)
    np.testing.assert_array_equal(table[:, 1:4], np.tile([1.5, 0.5, 1.0], (51, 1)))

    with h5py.File(out / "channel-cutout.h5", "r") as h5:
        assert h5["velocity_0021"].shape == (1, 65, 32, 3)
        sizes = {name: h5[name].shape[0] for name in ("xcoor", "ycoor", "zcoor")}
        y = h5["ycoor"][:]
    assert sizes == {"xcoor": 32, "ycoor": 65, "zcoor": 1}
    assert y[0] == -1.0 and y[-1] == 1.0 and not np.allclose(np.diff(y), np.diff(y)[0])  # stretched
    xmf = ET.parse(out / "channel-cutout.xmf").getroot()
    (grid,) = xmf.iter("Topology")
    assert grid.get("NumberOfElements") == "1 65 32"
    refs = [item.text.strip() for item in xmf.iter("DataItem")]
    assert refs == [
        "channel-cutout.h5:/xcoor",
        "channel-cutout.h5:/ycoor",
        "channel-cutout.h5:/zcoor",
        "channel-cutout.h5:/velocity_0021",
    ]
    (attribute,) = xmf.iter("Attribute")
    assert attribute.get("AttributeType") == "Vector"
    assert (out / "channel-plane_contour_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
