"""The client on its own: fresh venvs holding only ``./clients/python`` (with or without extras), run from a
folder outside the repository so the server's packages cannot leak in, against a real server.

* With ``[all]``: the README's "From a notebook" code (read from README.md itself, only the address
  changed), and the shell examples that call ``labclient`` in both READMEs and the client README's Python
  example, run as written.
* Without extras: the core calls work, and the first call that needs an extra names it.

The venvs are built once per session (``pip --python`` installs into a venv made without pip, from the
local wheel cache), under pytest's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labservice.settings import Settings
from tests.plugin.cli import JOB_TOKEN_LIMITS
from tests.plugin.data import REPO

pytestmark = pytest.mark.slow

CLIENT = REPO / "clients" / "python"
README = REPO / "README.md"
CLIENT_README = CLIENT / "README.md"
INSTALL_TIMEOUT = 600


@pytest.fixture(scope="module")
def settings(cli_settings: Settings) -> Settings:
    return cli_settings  # the same server as test_cli.py: demo data, jobs on


@pytest.fixture(scope="session")
def client_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of clients/python, so pip's build leaves nothing (build/, *.egg-info) in the repository."""
    dest = tmp_path_factory.mktemp("client-src") / "python"
    shutil.copytree(CLIENT, dest, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    return dest


def _venv(root: Path, requirement: str) -> Path:
    """A venv at ``root`` with only ``requirement`` installed; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    # --no-compile: writing .pyc for pandas, pyarrow, plotly, ... is most of an install's time.
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile",
           "--disable-pip-version-check", requirement]  # fmt: skip
    done = subprocess.run(pip, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert done.returncode == 0, f"pip install {requirement} failed:\n{done.stderr[-3000:]}"
    return python


@pytest.fixture(scope="session")
def full_python(client_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("venv-all") / "venv", f"{client_source}[all]")


@pytest.fixture(scope="session")
def core_python(client_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("venv-core") / "venv", str(client_source))


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder outside the repository (the repo's labservice/ must not be importable)."""
    folder = tmp_path_factory.mktemp("outside")
    assert REPO not in folder.parents
    return folder


def _env(server_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABSERVICE_", "PYTHON"))}
    return {**env, "LABSERVICE_URL": server_url, "XDG_CONFIG_HOME": "/nonexistent", **extra}


def _python(python: Path, code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = cwd / "script.py"
    script.write_text(code)
    return subprocess.run([str(python), str(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def notebook_blocks() -> list[str]:
    """The README's "From a notebook" Python blocks that use the client (not the in-process server)."""
    text = README.read_text()
    section = text.split("## From a notebook", 1)[1].split("\n## ", 1)[0]
    return [b for b in _blocks(section, "python") if "import labservice" not in b]


def _readdress(code: str, url: str) -> str:
    host = url.removeprefix("http://")
    return code.replace("http://127.0.0.1:8000", url).replace(
        "labservice://127.0.0.1:8000", f"labservice://{host}"
    )


PROVE_CLIENT_ONLY = """\
import importlib.util, sys
assert importlib.util.find_spec("labservice") is None, "the server package is importable"
import labclient
assert "/site-packages/" in labclient.__file__, labclient.__file__
"""


def test_readme_examples_run_in_a_client_only_venv(full_python, server, outside) -> None:
    blocks = notebook_blocks()
    assert len(blocks) >= 3 and any('engine="labservice"' in b for b in blocks)
    code = PROVE_CLIENT_ONLY + "\n".join(_readdress(b, server.url) for b in blocks)
    # Check what each example gave, so a block that silently did nothing fails.
    code += textwrap.dedent("""
        assert u.shape == (10_000, 3) and g.shape == (10_000, 3, 3) and p.shape[1:] == (100, 1)
        assert cut.velocity.dims[:3] == ("z", "y", "x")
        assert len(halos) > 0 and len(history) > 0 and "Offsets" in parts and len(near) == 5
        assert ds.labservice is not None and "velocity" in ds
        print("README OK")
    """)
    result = _python(full_python, code, outside, _env(server.url))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "README OK" in result.stdout
    assert "unrecognized engine" not in result.stderr


def test_client_readme_examples(full_python, server, make_token, outside) -> None:
    text = CLIENT_README.read_text()
    token = make_token("client-only-readme", JOB_TOKEN_LIMITS)
    (python_block,) = _blocks(text, "python")
    result = _python(full_python, PROVE_CLIENT_ONLY + python_block + "\nassert u.shape == (2, 3)\n", outside,
                     _env(server.url))  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    shell = [b for b in _blocks(text, "sh") if "pip install" not in b]
    assert any("labclient cutout" in b for b in shell) and any("labclient jobs" in b for b in shell)
    # The main README's command-line examples too, wherever they are.
    shell += [b for b in _blocks(README.read_text(), "sh") if "labclient " in b and "pip install" not in b]
    bin_dir = str(full_python.parent)
    env = _env(server.url, LABSERVICE_TOKEN=token, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    script = "set -euo pipefail\n" + "\n".join(shell)
    result = subprocess.run(["bash", "-c", script], cwd=outside, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    made = {p.name for p in outside.iterdir()}
    assert {"sensors.csv", "values.parquet", "grad.h5", "p.nc", "top.csv", "cut.h5", "results"} <= made
    assert "running it as a job" in result.stderr  # the 0.8 MiB cutout went over the token's 64 KiB


def test_core_install_names_the_missing_extra(core_python, server, outside) -> None:
    code = PROVE_CLIENT_ONLY + textwrap.dedent(f"""
        import importlib.metadata as md, importlib.util, pathlib
        for name in ("xarray", "pandas", "pyarrow", "h5py", "netCDF4", "tqdm", "zarr", "aiohttp"):
            assert importlib.util.find_spec(name) is None, name + " came with the core install"
        assert md.version("labservice-client") == labclient.__version__
        meta = md.metadata("labservice-client")
        assert meta["License-Expression"] == "BSD-3-Clause" and "labclient" in meta["Description"]
        assert set(meta.get_all("Provides-Extra")) >= {{"xarray", "pandas", "files", "progress", "jhtdb", "all"}}
        assert (pathlib.Path(labclient.__file__).parent / "py.typed").exists()

        from labclient import Lab
        lab = Lab({server.url!r})
        iso = lab.dataset("isotropic64")
        assert iso.points("velocity", [[0.1, 0.2, 0.3]], time=7.0).shape == (1, 3)   # the core works
        assert iso.cutout("velocity", 7.0, x=(0, 4), y=(0, 4), z=(0, 4), as_numpy=True)["data"].shape[:3] == (4, 4, 4)

        def message(call):
            try:
                call()
            except ImportError as exc:
                return str(exc)
            raise AssertionError("no ImportError")

        print(message(lambda: iso.cutout("velocity", 7.0, x=(0, 4), y=(0, 4), z=(0, 4))))
        print(message(lambda: lab.dataset("cosmo64").halos(snap=30, limit=3)))
        print(message(lambda: labclient.open_labservice))
    """)
    result = _python(core_python, code, outside, _env(server.url))
    assert result.returncode == 0, result.stderr[-4000:]
    cutout, tables, engine = result.stdout.strip().splitlines()
    assert cutout.startswith("cutouts as xarray need xarray") and "labservice-client[xarray]" in cutout
    assert "as_numpy=True" in cutout
    assert tables.startswith("tables need pandas") and "labservice-client[pandas]" in tables
    assert "labservice-client[xarray]" in engine

    labclient = str(core_python.parent / "labclient")
    (outside / "s.csv").write_text("x,y,z\n0.1,0.2,0.3\n")
    base = [labclient, "points", "isotropic64", "--variable", "velocity", "--time", "7", "--in", "s.csv"]
    env = _env(server.url)
    done = subprocess.run([*base, "--out", "v.csv"], cwd=outside, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # CSV needs no extra
    for out, extra in (("v.parquet", "pandas"), ("v.h5", "files"), ("v.nc", "files")):
        done = subprocess.run([*base, "--out", out], cwd=outside, env=env, capture_output=True, text=True)
        assert done.returncode == 3 and f"labservice-client[{extra}]" in done.stderr, done.stderr
    listed = subprocess.run(
        [labclient, "datasets", "--json"], cwd=outside, env=env, capture_output=True, text=True
    )
    assert "isotropic64" in {d["id"] for d in json.loads(listed.stdout)}
