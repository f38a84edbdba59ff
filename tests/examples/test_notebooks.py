"""The example notebooks: each runs top to bottom against a real `labservice serve`, and the committed
copies read well on GitHub (a science paragraph first, outputs and plots kept, only the thin client).

The notebooks run on temporary copies through ``examples/run_all.py``'s own ``execute`` and
``private_server`` (jobs on, a token with the CLI's default limits), so a failing cell fails the test and
the committed notebooks are never rewritten here.
"""

from __future__ import annotations

import ast
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from examples import run_all as runner

EXPECTED = [
    "01_virtual_sensors",
    "02_lagrangian_particles",
    "03_channel_flow",
    "04_cosmology",
    "05_big_work_as_a_job",
    "06_porting_jhtdb",
    "07_jhtdb_channel",
]
# What a notebook may import: the thin client, the four scientific libraries, and a little standard library.
ALLOWED_IMPORTS = {"labclient", "numpy", "matplotlib", "xarray", "pandas", "os", "tempfile", "pathlib"}


NOTEBOOKS = {path.stem: path for path in runner.NOTEBOOKS}


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list[nbformat.NotebookNode]:
    return [o for c in _code_cells(nb) for o in c.outputs if o.output_type == kind]


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in _code_cells(nb) for o in c.outputs)


def _imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_six_notebooks_are_there() -> None:
    assert sorted(NOTEBOOKS) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_reads_well(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS[name], as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "start with a title"
    assert len(first.source) > 600, "the first cell explains the science in a paragraph"
    assert any("What you should see" in c.source for c in nb.cells if c.cell_type == "markdown")
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = _code_cells(nb)
    imports = set().union(*(_imported_modules(c.source) for c in code))
    assert "labclient" in imports
    assert imports <= ALLOWED_IMPORTS, (
        f"only the thin client and friends: {sorted(imports - ALLOWED_IMPORTS)}"
    )
    # The committed copy keeps fresh outputs: every cell ran, in order, without errors, and the plots are there.
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "refresh with examples/run_all.py (all cells, in order)"
    assert not _outputs(nb, "error")
    assert _images(nb) >= 1


@pytest.fixture(scope="module")
def server_env(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`labservice serve` on the demo data, jobs on, plus a token that may run jobs."""
    before = _listing(demo_data)
    with runner.private_server(demo_data, tmp_path_factory.mktemp("examples-server")) as env:
        yield env
    assert _listing(demo_data) == before, "the server wrote into the shared demo data folder"


def _listing(folder: Path) -> dict[str, int]:
    """Every file and folder at the top of `folder`, with its modification time (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_kernel_is_the_venv_python(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys\nprint(sys.executable)")]
    path = tmp_path / "which.ipynb"
    nbformat.write(nb, path)
    runner.execute(path, cwd=tmp_path, cell_timeout=60)
    (out,) = nbformat.read(path, as_version=4).cells[0].outputs
    assert out.text.strip() == sys.executable


@pytest.mark.slow
@pytest.mark.dask
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_against_a_real_server(name: str, server_env: dict[str, str], tmp_path: Path) -> None:
    committed = NOTEBOOKS[name]
    before = committed.read_bytes()
    copy = tmp_path / committed.name
    shutil.copy(committed, copy)
    runner.execute(copy, env=server_env, cwd=tmp_path)  # raises CellExecutionError on a failing cell

    nb = nbformat.read(copy, as_version=4)
    code = _code_cells(nb)
    assert all(c.execution_count is not None for c in code)
    assert not _outputs(nb, "error")
    assert _images(nb) >= 1
    assert committed.read_bytes() == before, "the committed notebook must not be rewritten by the test"
