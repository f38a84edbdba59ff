"""Execute the example notebooks against a labservice server, in place, so that their saved outputs are fresh.

    .venv/bin/python examples/run_all.py            # against $LABSERVICE_URL (default http://127.0.0.1:8000)
    .venv/bin/python examples/run_all.py --serve    # start a private server on ./data first (jobs on, a token)
    .venv/bin/python examples/run_all.py 01 05      # only the notebooks whose names start with these

Against your own server, set ``LABSERVICE_TOKEN`` to a token that may run jobs (notebook 5 needs one):
``labservice token create --name notebooks``. The tests (tests/examples) reuse :func:`execute` and
:func:`private_server` on temporary copies, so the committed notebooks are only rewritten by this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labservice.devserver import ServeProcess

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
# Seconds one cell may take: a guard against hangs, not a benchmark. Each notebook takes well under 2 minutes
# in all on a quiet 2-core machine, but the test suite shares the machine with other work.
CELL_TIMEOUT = 240
SERVER_START_TIMEOUT = 180.0  # `labservice serve` also starts a Dask cluster; slow on a busy machine


def execute(
    notebook: Path,
    output: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    cell_timeout: int = CELL_TIMEOUT,
) -> float:
    """Run every cell of ``notebook`` top to bottom and save the result; return the wall time in seconds.

    Parameters
    ----------
    notebook
        The .ipynb to run.
    output
        Where to save the executed notebook (default: over ``notebook``).
    env
        Extra environment variables for the kernel (``LABSERVICE_URL``, ``LABSERVICE_TOKEN``).
    cwd
        Working directory of the kernel (default: the notebook's folder); files the notebook writes go here.
    cell_timeout
        Seconds a single cell may take.

    Raises
    ------
    nbclient.exceptions.CellExecutionError
        When a cell raises; the executed part is still saved to ``output`` for inspection.
    """
    import nbclient
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",  # resolved to this interpreter (the venv's) by jupyter_client
        timeout=cell_timeout,
        resources={"metadata": {"path": str(cwd or notebook.parent)}},
        coalesce_streams=True,  # one stream per cell, progress-bar carriage returns resolved
    )
    start = time.perf_counter()
    try:
        client.execute(env={**os.environ, **(env or {})})
    finally:
        nbformat.write(nb, output or notebook)
    return time.perf_counter() - start


def _create_token(workdir: Path) -> str:
    """A token with the CLI's default limits (jobs allowed), issued the way a user would."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "labservice",
            "token",
            "create",
            "--name",
            "notebooks",
            "--token-db",
            str(workdir / "tokens.sqlite"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


@contextmanager
def private_server(data_dir: Path, workdir: Path | None = None) -> Iterator[dict[str, str]]:
    """Run ``labservice serve`` on a free loopback port with jobs on; yield the kernel environment.

    Tokens, job records, job outputs and MyDB tables go to ``workdir`` (a temporary folder by default), never into
    ``data_dir``. Yields ``{"LABSERVICE_URL": ..., "LABSERVICE_TOKEN": ...}``.
    """
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="labservice-examples-")) if own else Path(workdir)
    token = _create_token(work)
    env = {
        "LABSERVICE_TOKEN_DB": str(work / "tokens.sqlite"),
        "LABSERVICE_JOB_DB": str(work / "jobs.sqlite"),
        "LABSERVICE_SCRATCH_URL": str(work / "scratch"),
        "LABSERVICE_USER_STORE_URL": str(work / "mydb"),
    }
    server = ServeProcess(data_dir, env, work / "server.log")
    try:
        server.wait_ready(SERVER_START_TIMEOUT, jobs=True)
        yield {"LABSERVICE_URL": server.url, "LABSERVICE_TOKEN": token}
    finally:
        server.stop()
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="run only notebooks whose names start with these")
    parser.add_argument("--serve", action="store_true", help="start a private server on --data first")
    parser.add_argument("--data", type=Path, default=HERE.parent / "data", help="demo data folder (--serve)")
    args = parser.parse_args(argv)
    chosen = [nb for nb in NOTEBOOKS if not args.only or any(nb.name.startswith(p) for p in args.only)]
    if not chosen:
        parser.error(f"no notebook matches {args.only}; have {[nb.name for nb in NOTEBOOKS]}")

    def run_all(env: dict[str, str]) -> None:
        for nb in chosen:
            with tempfile.TemporaryDirectory(prefix="labservice-nb-") as scratch:  # files the notebook writes
                seconds = execute(nb, env=env, cwd=Path(scratch))
            print(f"{nb.name}: {seconds:.1f} s", flush=True)

    if args.serve:
        with private_server(args.data) as env:
            run_all(env)
    else:
        run_all({})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
