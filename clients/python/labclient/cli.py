"""``labclient``: the command line for users (points, cutouts, SQL, jobs, datasets).

Every command takes ``--url``, ``--token`` and ``--profile`` (see :mod:`labclient.config`) before or after
its name. Errors print the server's ``detail`` on stderr and exit with the codes in :data:`EPILOG`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from labclient import __version__
from labclient._cli_io import (
    CUTOUT_SUFFIXES,
    POINT_OUTPUTS,
    TABLE_SUFFIXES,
    InputError,
    SuffixError,
    format_for,
    read_points,
    write_values,
)
from labclient._extras import MissingExtra
from labclient.config import ConfigError, config_path, resolve
from labclient.errors import ConnectionFailed, LabClientError, LimitError, error_for_status

OK, USAGE, CLIENT, SERVER, NETWORK, JOB = 0, 2, 3, 4, 5, 6
EPILOG = """\
exit codes:
  0  done
  2  usage: a bad command line, an unknown profile, a bad config file, an unknown file suffix,
     or something this server cannot do (sql --submit without an SQL job kind)
  3  client: the request was refused (HTTP 4xx: unknown dataset, bad range, no or weak token,
     over a limit) or a local input cannot be used (missing file, no x, y, z columns, missing extra)
  4  server: the server failed (HTTP 5xx)
  5  network: the server could not be reached
  6  job: a job ended failed, cancelled or expired, or --timeout passed

configuration: --url/--token, else --profile NAME from $XDG_CONFIG_HOME/labservice/config.toml
(~/.config/labservice/config.toml), else $LABSERVICE_URL/$LABSERVICE_TOKEN, else the [default] profile.
"""
JOBS = "/api/v1/jobs"
NO_TOKEN = (
    'jobs need a token: pass --token, set LABSERVICE_TOKEN, or add token = "..." to a profile in {path}'
)


class Usage(Exception):
    """A usage error found after parsing (exit 2)."""


class JobEnded(Exception):
    """A job did not finish with results (exit 6)."""


# -- output helpers --------------------------------------------------------------------------------------
class Context:
    """What every command gets: the parsed arguments, a lazily opened connection, the progress switch."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.conn = resolve(args.url, args.token, args.profile)
        self.progress = (
            sys.stderr.isatty() and sys.stdout.isatty() if args.progress is None else args.progress
        )
        self._lab: Any = None

    @property
    def lab(self) -> Any:
        if self._lab is None:
            from labclient.lab import Lab

            self._lab = Lab(self.conn.url, token=self.conn.token or "", retries=self.args.retries)
        return self._lab

    def need_token(self) -> None:
        if not self.conn.token:
            raise LabClientError(NO_TOKEN.format(path=config_path()))

    def bar(self, total: int | None, unit: str, desc: str) -> Any:
        if not self.progress:
            return None
        from labclient.batching import tqdm_class

        cls = tqdm_class()
        if cls is None:
            return None
        # Auto bars wait a second before drawing, so quick commands stay quiet.
        delay = 0.0 if self.args.progress else 1.0
        return cls(total=total, unit=unit, unit_scale=True, unit_divisor=1024 if unit == "B" else 1000,
                   desc=desc, delay=delay)  # fmt: skip

    def close(self) -> None:
        if self._lab is not None:
            self._lab.close()


def say(text: str) -> None:
    print(text, file=sys.stderr)


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip()[:500] or response.reason_phrase), None
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"]), body.get("code")
    return str(body)[:500], None


def _download(ctx: Context, path: str, params: dict[str, Any], dest: Path, desc: str) -> None:
    """Stream a GET into ``dest`` (through ``dest.part``), with a byte bar when it is on."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        with ctx.lab.transport.client.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                response.read()
                raise error_for_status(response.status_code, *_detail(response))
            size = response.headers.get("content-length")
            bar = ctx.bar(int(size) if size else None, "B", desc)
            try:
                with open(tmp, "wb") as out:
                    for block in response.iter_bytes(1 << 20):
                        out.write(block)
                        if bar is not None:
                            bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _times(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        start, end, step = (float(p) for p in parts)
    except ValueError:
        raise Usage(f"--times takes START:END:STEP, e.g. 6.0:8.0:0.01; got {text!r}") from None
    return start, end, step


# -- commands --------------------------------------------------------------------------------------------
def cmd_datasets(ctx: Context) -> None:
    datasets = ctx.lab.datasets()
    if ctx.args.json:
        print(json.dumps(datasets, indent=2))
        return
    rows = []
    for d in datasets:
        grid = d.get("grid") or {}
        times = d.get("times") or {}
        rows.append({
            "id": d["id"], "kind": d.get("kind", ""), "grid": "x".join(str(s) for s in grid.get("shape", [])),
            "times": times.get("count", d.get("n_snapshots", "")), "title": d.get("title", ""),
        })  # fmt: skip
    _print_table(rows, ["id", "kind", "grid", "times", "title"])


def cmd_info(ctx: Context) -> None:
    info = ctx.lab.transport.call("GET", f"/api/v1/datasets/{ctx.args.dataset}", binary=False)
    if ctx.args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['id']}: {info.get('title', '')} ({info.get('kind', 'field')})")
    meta = info.get("metadata")
    if meta is not None:
        times = meta["times"]
        print(
            f"grid      {' x '.join(str(s) for s in info['grid']['shape'])}, periodic {info['grid']['periodic']}"
        )
        print(f"times     {len(times)}: {times[0]:g} .. {times[-1]:g}")
        for name, var in sorted(meta["variables"].items()):
            print(f"variable  {name}: {', '.join(var['components'])}")
        methods = info.get("methods", {})
        print(f"spatial   {', '.join(methods.get('spatial', {}))}")
        print(f"temporal  {', '.join(methods.get('temporal', []))}")
        print(f"operators {', '.join(methods.get('operators', []))}")
        print(f"formats   {', '.join(methods.get('cutout_formats', []))}")
    else:
        for key in ("box", "n_halos", "snapshots", "units"):
            if key in info:
                print(f"{key:<9} {info[key]}")
        if info.get("columns"):
            print(f"columns   {', '.join(info['columns'])}")
    caller = info.get("caller", {}).get("name", "public")
    limits = ", ".join(f"{k}={v}" for k, v in info.get("limits", {}).items())
    print(f"you       {caller}: {limits}")


def cmd_points(ctx: Context) -> None:
    a = ctx.args
    fmt_check = format_for(a.out, POINT_OUTPUTS, "output")  # a bad suffix fails before any request
    times = _times(a.times)
    if (a.time is None) == (times is None):
        raise Usage("give one of --time T or --times START:END:STEP")
    points = read_points(a.input)
    ds = ctx.lab.dataset(a.dataset)
    if not hasattr(ds, "query_points"):
        raise LabClientError(
            f"{a.dataset} is a simulation of halos, not a field; points need a field dataset"
        )
    result = ds.query_points(
        a.variable, points, time=a.time, times=times, spatial=a.spatial, temporal=a.temporal,
        operator=a.operator, progress=ctx.progress,
    )  # fmt: skip
    attrs = {"dataset": a.dataset, "variable": a.variable, "operator": a.operator, "spatial": a.spatial,
             "temporal": a.temporal, "server": ctx.conn.url}  # fmt: skip
    write_values(a.out, result, points, times is not None, attrs)
    if a.out != "-":
        say(f"{points.shape[0]} points x {len(result['times'])} time(s) -> {a.out} ({fmt_check})")


def cmd_cutout(ctx: Context) -> None:
    a = ctx.args
    fmt = a.format or format_for(a.out, CUTOUT_SUFFIXES, "output")
    dest = Path(a.out)
    params = {"variable": a.variable, "time": repr(a.time), "format": fmt}
    params.update({k: v for k, v in (("x", a.x), ("y", a.y), ("z", a.z)) if v})
    if not a.job:
        try:
            _download(ctx, f"/api/v1/datasets/{a.dataset}/cutout", params, dest, a.dataset)
            say(f"cutout -> {dest}")
            return
        except LimitError as exc:
            if not ctx.conn.token:
                raise LimitError(
                    f"{exc.detail}. {NO_TOKEN.format(path=config_path())}", 413, exc.code
                ) from None
            say(f"over the synchronous limit ({exc.detail.split(';')[0]}); running it as a job")
    ctx.need_token()
    from labclient.jobs import submit_job

    request = {"kind": "cutout", "dataset": a.dataset, "variable": a.variable, "time": a.time,
               "x": a.x, "y": a.y, "z": a.z, "format": fmt}  # fmt: skip
    job = submit_job(ctx.lab, request)
    say(f"job {job.id} submitted")
    if a.no_wait:
        print(job.id)
        return
    _wait(ctx, job, a.timeout)
    _fetch_one(job, fmt, dest)
    say(f"job {job.id} -> {dest}")


def _fetch_one(job: Any, fmt: str, dest: Path) -> None:
    """Download the job's ``fmt`` file to ``dest`` (a zarr result is a folder); sidecars stay behind."""
    files = [f for f in job.files() if f.get("format") == fmt]
    main = [f for f in files if not f["name"].endswith((".xdmf", ".xmf"))] or files
    if not main:
        raise JobEnded(f"job {job.id} has no {fmt} file")
    chosen = main[0]
    if chosen.get("format") == "zarr":
        job.download(dest)
        return
    staging = dest.parent / f".{dest.name}.{job.id}"
    try:
        got = job.download(staging, chosen["name"])
        os.replace(got, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _job_kinds(ctx: Context) -> set[str]:
    """The job kinds this server runs, read from its OpenAPI document (the request models' ``kind``)."""
    doc = ctx.lab.transport.call("GET", "/openapi.json", binary=False)
    kinds: set[str] = set()
    for schema in doc.get("components", {}).get("schemas", {}).values():
        kind = schema.get("properties", {}).get("kind", {})
        kinds.update(v for v in [kind.get("const"), kind.get("default"), *kind.get("enum", [])] if v)
    return kinds


def cmd_sql(ctx: Context) -> None:
    a = ctx.args
    query = sys.stdin.read() if a.query == "-" else a.query
    fmt = format_for(a.out, TABLE_SUFFIXES, "output") if a.out else "csv"
    if a.submit:
        kinds = _job_kinds(ctx)
        if "sql" not in kinds:
            raise Usage(
                f"this server has no SQL job kind (its job kinds: {', '.join(sorted(kinds)) or 'none'}); "
                "run the query without --submit (answers are capped at the server's max_rows; "
                "--truncate returns the first rows instead of an error)"
            )
        if fmt not in ("csv", "parquet"):
            raise Usage(f"a submitted query writes .csv or .parquet, not {fmt}; change -o")
        ctx.need_token()
        from labclient.jobs import submit_job

        job = submit_job(ctx.lab, {"kind": "sql", "dataset": a.sim, "sql": query, "format": fmt})
        _wait(ctx, job, None)
        _fetch_one(job, fmt, Path(a.out or f"{job.id}.{fmt}"))
        return
    params = {"format": fmt, "truncate": "true" if a.truncate else "false"}
    response = ctx.lab.transport.request(
        "POST", f"/api/v1/datasets/{a.sim}/sql", body={"sql": query}, params=params, binary=False
    )
    if a.out in (None, "-"):
        sys.stdout.write(response.text)
    else:
        Path(a.out).write_bytes(response.content)
        say(f"{a.sim} sql -> {a.out}")


def _wait(ctx: Context, job: Any, timeout: float | None) -> None:
    from labclient.jobs import JobFailed

    try:
        job.wait(progress=ctx.progress, timeout=timeout)
    except JobFailed as exc:
        raise JobEnded(exc.detail) from None
    except TimeoutError as exc:
        raise JobEnded(str(exc)) from None


def cmd_jobs(ctx: Context) -> None:
    a = ctx.args
    ctx.need_token()
    from labclient.jobs import Job

    if a.action == "list":
        jobs = ctx.lab.transport.call("GET", JOBS, binary=False)["jobs"]
        if a.json:
            print(json.dumps(jobs, indent=2))
            return
        rows = [{**j, "progress": f"{j.get('progress', {}).get('done', 0)}/{j.get('progress', {}).get('total', 0)}"}
                for j in jobs]  # fmt: skip
        _print_table(rows, ["id", "kind", "status", "progress", "created"])
        return
    if not a.job:
        raise Usage(f"labclient jobs {a.action} needs a job id (see `labclient jobs list`)")
    job = Job(ctx.lab, a.job)
    if a.action == "show":
        print(json.dumps(job.status(), indent=2))
    elif a.action == "wait":
        _wait(ctx, job, a.timeout)
        say(f"job {job.id} done")
    elif a.action == "cancel":
        print(json.dumps(job.cancel(), indent=2))
    else:  # download
        if job.state != "done":
            raise JobEnded(
                f"job {job.id} is {job.state}; download it when done (`labclient jobs wait {job.id}`)"
            )
        folder = job.download(a.out or f"job-{job.id}", a.name)
        say(f"job {job.id} -> {folder}")


# -- the parser ------------------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The connection options, accepted before and after the command name."""
    d: Callable[[Any], Any] = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    g = parser.add_argument_group("connection")
    g.add_argument("--url", default=d(None), help="server address (default: see configuration below)")
    g.add_argument("--token", default=d(None), help="bearer token")
    g.add_argument("--profile", default=d(None), help="a profile in config.toml")
    g.add_argument("--retries", type=int, default=d(3), help="retries of a failed connection (default 3)")
    g.add_argument("--progress", dest="progress", action="store_true", default=d(None),
                   help="always show progress bars (default: only on a terminal)")  # fmt: skip
    g.add_argument(
        "--no-progress", dest="progress", action="store_false", default=d(None), help="never show them"
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="labclient", description="Measure inside simulations served by labservice.", epilog=EPILOG,
        formatter_class=fmt,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"labclient {__version__}")
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[Context], None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=EPILOG, formatter_class=fmt)
        _common(p, suppress=True)
        p.set_defaults(func=func)
        return p

    p = command("datasets", cmd_datasets, "list the datasets served")
    p.add_argument("--json", action="store_true", help="the server's JSON")
    p = command("info", cmd_info, "one dataset: grid, times, variables, methods and your limits")
    p.add_argument("dataset")
    p.add_argument("--json", action="store_true", help="the server's JSON")

    p = command("points", cmd_points, "values at points read from a file (virtual sensors)")
    p.add_argument("dataset")
    p.add_argument("--variable", required=True, help="e.g. velocity")
    p.add_argument("--time", type=float, help="one time")
    p.add_argument("--times", help="a series START:END:STEP")
    p.add_argument(
        "--in", dest="input", required=True, help="CSV, TSV or Parquet with x, y, z columns; - for stdin"
    )
    p.add_argument(
        "--out", default="-", help="CSV, TSV, Parquet, HDF5 (.h5) or NetCDF (.nc); - for CSV on stdout"
    )
    p.add_argument("--spatial", default="lag4", help="spatial interpolation (default lag4; see `info`)")
    p.add_argument("--temporal", default="none", help="time interpolation (default none)")
    p.add_argument("--operator", default="field", help="field, gradient, hessian, laplacian, ...")

    p = command("cutout", cmd_cutout, "a subvolume into a file (a job when over your synchronous limit)")
    p.add_argument("dataset")
    p.add_argument("--variable", required=True)
    p.add_argument("--time", type=float, required=True, help="a stored time")
    for axis in "xyz":
        p.add_argument(f"-{axis}", help=f"{axis} grid indices START:STOP[:STEP], 0-based, stop exclusive")
    p.add_argument("-o", "--out", required=True, help="file: .h5, .nc, .zarr.zip, .npy, .msgpack, .zip")
    p.add_argument("--format", help="output format (default: from the suffix)")
    p.add_argument("--job", action="store_true", help="run it as a job even when it fits")
    p.add_argument("--no-wait", action="store_true", help="submit the job, print its id and return")
    p.add_argument("--timeout", type=float, help="stop waiting for the job after this many seconds")

    p = command("sql", cmd_sql, "read-only SQL over a simulation's halos, trees and snapshots")
    p.add_argument("sim")
    p.add_argument("query", help="one SELECT statement; - reads it from stdin")
    p.add_argument("-o", "--out", help="file: .csv, .parquet or .json (default: CSV on stdout)")
    p.add_argument("--truncate", action="store_true", help="over the row cap, return the first rows")
    p.add_argument("--submit", action="store_true", help="run as a job (when the server has an SQL job kind)")

    p = command("jobs", cmd_jobs, "your batch jobs: list, show, wait, download, cancel")
    p.add_argument("action", choices=["list", "show", "wait", "download", "cancel"])
    p.add_argument("job", nargs="?", help="job id (all but list)")
    p.add_argument("-o", "--out", help="download: the folder (default job-<id>)")
    p.add_argument("--name", help="download: only this file")
    p.add_argument("--timeout", type=float, help="wait: give up after this many seconds")
    p.add_argument("--json", action="store_true", help="list: the server's JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see :data:`EPILOG`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = None
    try:
        ctx = Context(args)
        args.func(ctx)
        return OK
    except (Usage, ConfigError, SuffixError) as exc:
        parser.exit(USAGE, f"labclient: error: {exc}\n")
    except InputError as exc:
        return _fail(CLIENT, str(exc))
    except ConnectionFailed as exc:
        return _fail(NETWORK, exc.detail)
    except httpx.TransportError as exc:
        return _fail(NETWORK, f"could not reach {ctx.conn.url if ctx else 'the server'}: {exc!r}")
    except LabClientError as exc:
        code = SERVER if exc.status is not None and exc.status >= 500 else CLIENT
        return _fail(code, exc.detail)
    except MissingExtra as exc:
        return _fail(CLIENT, str(exc))
    except JobEnded as exc:
        return _fail(JOB, str(exc))
    except OSError as exc:
        return _fail(CLIENT, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except KeyboardInterrupt:
        return 130
    finally:
        if ctx is not None:
            ctx.close()
    return OK  # pragma: no cover - parser.exit raised


def _fail(code: int, message: str) -> int:
    say(f"labclient: {message}")
    return code


def run() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
