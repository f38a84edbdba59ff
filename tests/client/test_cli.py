"""The ``labclient`` command, run as a subprocess (the installed console script) against real servers.

Every command, every bad input, and the exit codes of ``labclient --help``: 2 usage, 3 refused or bad
input, 4 server error, 5 network, 6 a job that did not finish.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr

from labclient import Lab, __version__
from labservice.devserver import free_ports
from labservice.limits import Limits
from labservice.settings import Settings
from tests.plugin.cli import JOB_TOKEN_LIMITS
from tests.plugin.stack import make_settings

LABCLIENT = Path(sys.executable).with_name("labclient")  # the console script pip installed
PTS = np.array([[0.1, 0.2, 0.3], [3.1, 1.5, 4.2], [6.0, 0.05, 2.2]])
CUT = ["-x", "0:64:2", "-y", "0:64", "-z", "0:32"]  # 0.8 MiB of velocity: over the job token's 64 KiB


@pytest.fixture(scope="module")
def settings(cli_settings: Settings) -> Settings:
    return cli_settings


@pytest.fixture(scope="module")
def job_token(make_token) -> str:
    return make_token("cli-jobs", JOB_TOKEN_LIMITS)


@pytest.fixture(scope="module")
def env(server, tmp_path_factory) -> dict[str, str]:
    """The command's environment: this server, no token, an empty config folder."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LABSERVICE_")}
    return {**clean, "LABSERVICE_URL": server.url, "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg"))}


def run(env: dict[str, str], *args: str, cwd: Path | None = None, stdin: str | None = None,
        **extra: str) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run(
        [str(LABCLIENT), *args], env={**env, **extra}, cwd=cwd, input=stdin, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    return result


def fails(result: subprocess.CompletedProcess, code: int, *texts: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    for text in texts:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def sensors(folder: Path, name: str = "sensors.csv", header: str = "id,x,y,z") -> Path:
    path = folder / name
    lines = [header] + [f"s{i},{x!r},{y!r},{z!r}" for i, (x, y, z) in enumerate(PTS.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- help, version, exit codes ---------------------------------------------------------------------------
def test_help_documents_commands_and_exit_codes(env) -> None:
    out = ok(run(env, "--help")).stdout
    for command in ("datasets", "info", "points", "cutout", "sql", "jobs"):
        assert command in out
    for line in ("2  usage", "3  client", "4  server", "5  network", "6  job"):
        assert line in out
    assert "config.toml" in out and "LABSERVICE_URL" in out
    assert ok(run(env, "--version")).stdout.strip() == f"labclient {__version__}"
    fails(run(env), 2, "usage:")
    fails(run(env, "points", "isotropic64"), 2, "--variable")
    fails(run(env, "frobnicate"), 2, "invalid choice")


# -- datasets and info -----------------------------------------------------------------------------------
def test_datasets_and_info(env, server) -> None:
    out = ok(run(env, "datasets")).stdout
    assert {"isotropic64", "channel64", "cosmo64"} <= {line.split()[0] for line in out.splitlines()[1:]}
    listed = json.loads(ok(run(env, "datasets", "--json")).stdout)
    assert {d["id"] for d in listed} >= {"isotropic64", "cosmo64"}
    info = ok(run(env, "info", "isotropic64")).stdout
    assert "variable  velocity: ux, uy, uz" in info and "lag6" in info and "you       public" in info
    assert json.loads(ok(run(env, "info", "isotropic64", "--json")).stdout)["id"] == "isotropic64"
    assert "columns" in ok(run(env, "info", "cosmo64")).stdout
    # The server's own detail, word for word, on stderr.
    detail = httpx.get(f"{server.url}/api/v1/datasets/isotropc64").json()["detail"]
    assert fails(run(env, "info", "isotropc64"), 3).strip() == f"labclient: {detail}"


# -- points ----------------------------------------------------------------------------------------------
def test_points_csv_equals_the_python_client(env, server, tmp_path) -> None:
    src = sensors(tmp_path)
    ok(run(env, "points", "isotropic64", "--variable", "velocity", "--time", "7", "--in", str(src),
           "--out", "v.csv", "--spatial", "lag6", cwd=tmp_path))  # fmt: skip
    rows = list(csv.DictReader(io.StringIO((tmp_path / "v.csv").read_text())))
    assert list(rows[0]) == ["x", "y", "z", "ux", "uy", "uz"]
    got = np.array([[float(r[c]) for c in ("ux", "uy", "uz")] for r in rows])
    with Lab(server.url) as lab:
        want = lab.dataset("isotropic64").points("velocity", PTS, time=7.0, spatial="lag6")
    np.testing.assert_array_equal(got, want)  # repr() of floats round-trips exactly
    np.testing.assert_array_equal([[float(r[c]) for c in "xyz"] for r in rows], PTS)


def test_points_gradient_to_parquet_hdf5_netcdf(env, server, tmp_path) -> None:
    src = tmp_path / "sensors.parquet"  # upper-case names are accepted
    pq.write_table(pa.table({"X": PTS[:, 0], "Y": PTS[:, 1], "Z": PTS[:, 2]}), src)
    args = ["points", "isotropic64", "--variable", "velocity", "--time", "7", "--in", str(src),
            "--operator", "gradient"]  # fmt: skip
    with Lab(server.url) as lab:
        want = lab.dataset("isotropic64").query_points("velocity", PTS, time=7.0, operator="gradient")
    names = list(want["components"])
    assert names[:2] == ["dux/dx", "dux/dy"]
    for out in ("g.parquet", "g.h5", "g.nc"):
        ok(run(env, *args, "--out", out, cwd=tmp_path))
    table = pq.read_table(tmp_path / "g.parquet")
    assert table.column_names == ["x", "y", "z", *names]
    np.testing.assert_array_equal(
        np.stack([table[c].to_numpy() for c in names], 1), want["values"].reshape(3, 9)
    )
    assert table.schema.metadata[b"operator"] == b"gradient"
    with h5py.File(tmp_path / "g.h5") as f:
        assert [c.decode() for c in f["component"][:]] == names
        np.testing.assert_array_equal(f["velocity_gradient"][:], want["values"].reshape(3, 9))
        np.testing.assert_array_equal(f["x"][:], PTS[:, 0])
    with xr.open_dataset(tmp_path / "g.nc") as ds:
        assert list(ds.component.values) == names and ds.attrs["dataset"] == "isotropic64"
        np.testing.assert_array_equal(ds["velocity_gradient"].values, want["values"].reshape(3, 9))


def test_points_series_and_stdin_stdout(env, server, tmp_path) -> None:
    text = sensors(tmp_path).read_text()
    out = ok(run(env, "points", "isotropic64", "--variable", "pressure", "--times", "6:6.1:0.05", "--in", "-",
                 "--temporal", "pchip", stdin=text)).stdout  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["time", "x", "y", "z", "p"] and len(rows) == 3 * len(PTS)
    with Lab(server.url) as lab:
        want = lab.dataset("isotropic64").points("pressure", PTS, times=(6.0, 6.1, 0.05), temporal="pchip")
    np.testing.assert_array_equal(np.array([float(r["p"]) for r in rows]), want.reshape(-1))
    assert [float(r["time"]) for r in rows[:: len(PTS)]] == pytest.approx([6.0, 6.05, 6.1])


def test_points_bad_inputs(env, tmp_path) -> None:
    base = ["points", "isotropic64", "--variable", "velocity", "--time", "7"]
    src = str(sensors(tmp_path))
    fails(run(env, *base, "--in", str(tmp_path / "missing.csv")), 3, "missing.csv does not exist")
    bad_cols = sensors(tmp_path, "cols.csv", "id,a,b,c")
    fails(run(env, *base, "--in", str(bad_cols)), 3, "needs columns named x, y and z", "missing: x, y, z")
    (tmp_path / "text.csv").write_text("x,y,z\n1,2,3\n1,two,3\n")
    fails(run(env, *base, "--in", str(tmp_path / "text.csv")), 3, "line 3", "must be numbers")
    (tmp_path / "empty.csv").write_text("")
    fails(run(env, *base, "--in", str(tmp_path / "empty.csv")), 3, "is empty")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    fails(run(env, *base, "--in", str(tmp_path / "bad.parquet")), 3, "not a readable Parquet file")
    fails(run(env, *base, "--in", src, "--out", "v.xlsx"), 2, "unknown suffix", ".parquet")
    fails(run(env, *base, "--in", str(tmp_path / "s.json")), 2, "unknown suffix")
    fails(run(env, *base, "--in", src, "--times", "6:7:0.5"), 2, "one of --time")
    fails(run(env, "points", "isotropic64", "--variable", "velocity", "--in", src), 2, "one of --time")
    fails(run(env, "points", "isotropic64", "--variable", "velocity", "--times", "6:7", "--in", src), 2,
          "START:END:STEP")  # fmt: skip
    fails(run(env, *base, "--in", src, "--spatial", "lag5"), 3, "lag5")
    fails(
        run(env, "points", "isotropic64", "--variable", "vorticty", "--time", "7", "--in", src), 3, "velocity"
    )
    fails(run(env, "points", "isotropc64", "--variable", "velocity", "--time", "7", "--in", src), 3,
          "Did you mean 'isotropic64'")  # fmt: skip
    fails(
        run(env, "points", "cosmo64", "--variable", "velocity", "--time", "7", "--in", src), 3, "not a field"
    )
    assert not (tmp_path / "v.xlsx").exists()


# -- cutouts ---------------------------------------------------------------------------------------------
def test_cutout_in_the_synchronous_limit(env, tmp_path) -> None:
    ok(run(env, "cutout", "isotropic64", "--variable", "velocity", "--time", "7", "-x", "0:16", "-y", "0:16",
           "-z", "0:8", "-o", "small.h5", cwd=tmp_path))  # fmt: skip
    ok(run(env, "cutout", "isotropic64", "--variable", "pressure", "--time", "7", "-x", "0:8", "-o", "p.nc",
           cwd=tmp_path))  # fmt: skip
    with h5py.File(tmp_path / "small.h5") as f:
        assert any(d.shape[:3] == (8, 16, 16) for d in _arrays(f))
    with xr.open_dataset(tmp_path / "p.nc") as ds:
        assert ds.sizes["x"] == 8 and ds.sizes["y"] == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.nc", "small.h5"]  # no .part left behind


def _arrays(f: h5py.File) -> list[h5py.Dataset]:
    found: list[h5py.Dataset] = []
    f.visititems(
        lambda _, obj: found.append(obj) if isinstance(obj, h5py.Dataset) and obj.ndim >= 3 else None
    )
    return found


def test_cutout_over_the_limit_becomes_a_job(env, job_token, make_token, tmp_path) -> None:
    big = make_token("cli-big", Limits(max_cutout_bytes=16 << 20, requests_per_minute=1_000_000))
    args = ["cutout", "isotropic64", "--variable", "velocity", "--time", "7", *CUT]
    ok(run(env, "--token", big, *args, "-o", "sync.h5", cwd=tmp_path))
    result = ok(run(env, *args, "-o", "job.h5", "--progress", cwd=tmp_path, LABSERVICE_TOKEN=job_token))
    assert "over the synchronous limit" in result.stderr and "running it as a job" in result.stderr
    assert "100%" in result.stderr and "task" in result.stderr  # the job's progress bar, forced on
    with h5py.File(tmp_path / "sync.h5") as a, h5py.File(tmp_path / "job.h5") as b:
        (da,), (db,) = _arrays(a), _arrays(b)
        assert da.shape == (32, 64, 32, 3) and db.shape == (1, 32, 64, 32, 3)  # a job's file has a time axis
        np.testing.assert_array_equal(da[()], db[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.h5", "sync.h5"]
    # Off a terminal, no bar by default.
    quiet = ok(run(env, *args, "-o", "quiet.h5", cwd=tmp_path, LABSERVICE_TOKEN=job_token))
    assert "%|" not in quiet.stderr and "task" not in quiet.stderr


def test_cutout_bad_inputs(env, tmp_path) -> None:
    base = ["cutout", "isotropic64", "--variable", "velocity", "--time", "7"]
    fails(run(env, *base, "-x", "5:2", "-o", "c.h5", cwd=tmp_path), 3, "x range 5:2")
    fails(run(env, *base, "-x", "0:2:0", "-o", "c.h5", cwd=tmp_path), 3, "step")
    fails(run(env, "cutout", "isotropic64", "--variable", "velocity", "--time", "7.001", "-x", "0:2",
              "-o", "c.h5", cwd=tmp_path), 3, "stored times")  # fmt: skip
    fails(run(env, *base, "-o", "c.xyz", cwd=tmp_path), 2, "unknown suffix", ".h5")
    fails(run(env, "cutout", "isotropic64", "--variable", "velocity", "-o", "c.h5"), 2, "--time")
    assert list(tmp_path.iterdir()) == []


def test_cutout_over_the_limit_without_a_token(small_server, tmp_path) -> None:
    # The small server's public cutouts stop at 16 KiB and it runs no jobs.
    result = run(small_server, "cutout", "periodic16", "--variable", "velocity", "--time", "0", "-o", "c.h5",
                 cwd=tmp_path)  # fmt: skip
    fails(result, 3, "over your synchronous cutout limit", "jobs need a token")


# -- sql -------------------------------------------------------------------------------------------------
def test_sql(env, server, tmp_path) -> None:
    query = "select id, mass from halos where snap = 30 order by mass desc limit 5"
    rows = list(csv.DictReader(io.StringIO(ok(run(env, "sql", "cosmo64", query)).stdout)))
    with Lab(server.url) as lab:
        want = lab.dataset("cosmo64").sql(query)
    assert [int(r["id"]) for r in rows] == list(want.id)
    ok(run(env, "sql", "cosmo64", query, "-o", "top.parquet", cwd=tmp_path))
    assert list(pq.read_table(tmp_path / "top.parquet")["id"].to_numpy()) == list(want.id)
    ok(run(env, "sql", "cosmo64", "-", "-o", "top.json", cwd=tmp_path, stdin=query))
    assert json.loads((tmp_path / "top.json").read_text())["columns"] == ["id", "mass"]
    fails(run(env, "sql", "cosmo64", "selec id"), 3, "syntax error")
    fails(run(env, "sql", "cosmo64", "select * from particles"), 3, "particles")
    fails(run(env, "sql", "isotropic64", "select 1"), 3, "not a cosmology simulation")
    fails(run(env, "sql", "cosmo64", query, "-o", "top.xlsx"), 2, "unknown suffix")
    # The server has the sql job kind now (tests/jobs/test_sql_kind.py runs --submit end to end): a token is needed.
    fails(run(env, "sql", "cosmo64", query, "--submit"), 3, "jobs need a token")


# -- jobs ------------------------------------------------------------------------------------------------
def test_jobs_list_show_wait_download_cancel(env, job_token, tmp_path) -> None:
    env = {**env, "LABSERVICE_TOKEN": job_token}
    job = ok(run(env, "cutout", "isotropic64", "--variable", "pressure", "--time", "7", "-x", "0:64",
                 "-y", "0:64", "-z", "0:16", "-o", "p.nc", "--job", "--no-wait")).stdout.strip()  # fmt: skip
    assert job in ok(run(env, "jobs", "list")).stdout
    assert job in {j["id"] for j in json.loads(ok(run(env, "jobs", "list", "--json")).stdout)}
    ok(run(env, "jobs", "wait", job, "--timeout", "120"))
    shown = json.loads(ok(run(env, "jobs", "show", job)).stdout)
    assert shown["status"] == "done" and shown["params"]["formats"] == ["netcdf"]
    ok(run(env, "jobs", "download", job, "-o", str(tmp_path / "res")))
    names = {f["name"] for f in shown["files"]}
    assert names <= {p.name for p in (tmp_path / "res").iterdir()} and "cutout.nc" in names
    with xr.open_dataset(tmp_path / "res" / "cutout.nc") as ds:
        assert ds.sizes["z"] == 16
    cancelled = json.loads(ok(run(env, "jobs", "cancel", job)).stdout)
    assert cancelled["status"] in ("cancelled", "expired")
    fails(run(env, "jobs", "download", job, "-o", str(tmp_path / "again")), 6, "download it when done")
    fails(run(env, "jobs", "wait", job), 6, job)
    fails(run(env, "jobs", "show", "0123456789abcdef"), 3, "no job")
    fails(run(env, "jobs", "show"), 2, "needs a job id")
    fails(run(env, "jobs", "frobnicate"), 2, "invalid choice")


def test_jobs_need_a_token(env, tmp_path) -> None:
    for args in (["jobs", "list"], ["cutout", "isotropic64", "--variable", "velocity", "--time", "7", "--job",
                                    "-o", "c.h5"]):  # fmt: skip
        fails(run(env, *args, cwd=tmp_path), 3, "jobs need a token", "LABSERVICE_TOKEN")
    fails(run(env, "--token", "lab_nope_nope", "jobs", "list"), 3, "token")


# -- configuration ---------------------------------------------------------------------------------------
def test_profiles(env, server, job_token, tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    folder = tmp_path / "labservice"
    folder.mkdir()
    (folder / "config.toml").write_text(
        f'[default]\nurl = "{dead}"\n\n[lab]\nurl = "{server.url}"\ntoken = "{job_token}"\n'
    )
    cfg = {k: v for k, v in env.items() if k != "LABSERVICE_URL"} | {"XDG_CONFIG_HOME": str(tmp_path)}
    fails(run(cfg, "--retries", "0", "datasets"), 5, dead)  # [default] is used when nothing else is set
    ok(run(cfg, "datasets", LABSERVICE_URL=server.url))  # the environment beats [default]
    ok(run(cfg, "--profile", "lab", "jobs", "list", LABSERVICE_URL=dead))  # --profile beats the environment
    ok(run(cfg, "jobs", "list", "--profile", "lab"))  # after the command name too
    ok(run(cfg, "--profile", "lab", "--url", server.url, "datasets"))
    fails(run(cfg, "--profile", "nope", "datasets"), 2, "no profile [nope]", "default, lab")
    (folder / "config.toml").write_text("[lab\n")
    fails(run(cfg, "datasets"), 2, "not valid TOML", str(folder / "config.toml"))
    (folder / "config.toml").write_text('[lab]\nurl = "x"\ntokn = "y"\n')
    fails(run(cfg, "datasets"), 2, "unknown keys ['tokn']")


# -- network and server errors ---------------------------------------------------------------------------
def test_server_down_is_a_network_error(env) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    fails(run(env, "--url", dead, "--retries", "1", "datasets"), 5, "could not reach", dead)
    fails(run(env, "--url", dead, "--retries", "0", "points", "isotropic64", "--variable", "velocity",
              "--time", "7", "--in", "-", stdin="x,y,z\n1,2,3\n"), 5, "could not reach")  # fmt: skip


def test_server_error_is_exit_4(small_server, small_token) -> None:
    # The small server runs no job engine: the jobs routes answer 503, a server-side error.
    fails(run(small_server, "--retries", "0", "--token", small_token, "jobs", "list"), 4, "not enabled")


@pytest.fixture(scope="module")
def small_settings(sample_urls, tmp_path_factory) -> Settings:
    return make_settings(sample_urls, tmp_path_factory.mktemp("cli-small"), public_max_cutout_bytes=16 << 10)


@pytest.fixture(scope="module")
def small_server(small_settings, stacks, env) -> dict[str, str]:
    """The environment for a second real server: the 16^3 samples, 16 KiB public cutouts, no jobs."""
    return {**env, "LABSERVICE_URL": stacks.server(small_settings).url}


@pytest.fixture(scope="module")
def small_token(small_settings, stacks) -> str:
    return stacks.token(small_settings, "cli-small", Limits())
