"""The ``labservice`` command line. Each command parses its options and calls one library function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="labservice: an open numerical laboratory.", no_args_is_help=True, add_completion=False)
demo_app = typer.Typer(help="Build the embedded demo datasets.", no_args_is_help=True)
token_app = typer.Typer(help="Issue and list access tokens.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")
app.add_typer(token_app, name="token")
user_app = typer.Typer(help="Users: who owns tokens, jobs, MyDB tables and links.", no_args_is_help=True)
app.add_typer(user_app, name="user")
db_app = typer.Typer(help="The platform database (tokens, jobs): create, migrate, import old files.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")
config_app = typer.Typer(help="The configuration file (--config labservice.yaml): show the effective settings.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")

DataDir = Annotated[Path, typer.Option("--data", help="Folder holding the datasets.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="A YAML file of settings (see deploy/labservice.yaml); LABSERVICE_* environment "
                 "variables override it. Default: LABSERVICE_CONFIG.", dir_okay=False),
]


def _use_config(config: Path | None) -> None:
    """Read every setting from ``config`` from now on (this process and the ones it starts), and check them
    once here so that a wrong key or value is one clear message (exit code 2), not a traceback later."""
    import os

    from labservice.config_file import CONFIG_ENV

    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())
    _load_settings()


def _load_settings(**overrides: object):
    from pydantic import ValidationError

    from labservice.config_file import ConfigError, explain
    from labservice.settings import Settings

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        typer.echo(f"error: {explain(exc, Settings)}", err=True)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(2)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data: Annotated[Path | None, typer.Option("--data", help="Serve every dataset under this folder.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="A YAML catalog listing dataset URLs.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Server processes (default 1, or LABSERVICE_WORKERS); more than 1 needs "
                     "LABSERVICE_REDIS_URL so that limits hold in total."),
    ] = None,
    root_path: Annotated[
        str | None,
        typer.Option(help='Path prefix a reverse proxy serves this under, e.g. "/lab" (the proxy strips it).'),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the HTTP API (settings also come from LABSERVICE_* environment variables)."""
    _use_config(config)
    from labservice.serving import run

    run(host=host, port=port, data_dir=data, catalog=catalog, workers=workers, root_path=root_path)


@app.command()
def engine(
    data: Annotated[Path | None, typer.Option("--data", help="Resolve dataset ids under this folder.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="A YAML catalog listing dataset URLs.")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler, tcp://host:port (default LABSERVICE_DASK_SCHEDULER).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the job engine as its own process (API servers then run with LABSERVICE_ENGINE=external).

    Several engines may run at once, on any hosts sharing the database, the scratch store and the scheduler.
    """
    _use_config(config)
    from labservice.jobs.service import main as run_engine
    from labservice.settings import Settings

    overrides = {k: v for k, v in (("data_dir", data), ("catalog", catalog), ("dask_scheduler", scheduler)) if v}
    run_engine(Settings(**overrides))


@app.command()
def ingest(
    descriptor: Annotated[Path, typer.Argument(help="The ingest descriptor (YAML).", exists=True, dir_okay=False)],
    overwrite: Annotated[bool, typer.Option(help="Start again instead of resuming.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Shards written at once (default: one per CPU, at most 8); with --dask local, the workers."),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(help="Write the shards as tasks on a Dask cluster: a scheduler address, or 'local'."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Turn simulation output (HDF5 files) into a labservice dataset, shard by shard, resumably."""
    _use_config(config)
    from labservice.datasets.ingest import ingest_descriptor

    url = ingest_descriptor(descriptor, overwrite=overwrite, progress=progress, threads=threads, dask=dask)
    typer.echo(f"ingested {url}")


@app.command("ingest-nbody")
def ingest_nbody_command(
    snapshots: Annotated[list[str], typer.Argument(help="Gadget or SWIFT HDF5 snapshot files or globs.")],
    dest: Annotated[Path, typer.Option("--dest", help="Folder of the new cosmology dataset.")],
    sim_id: Annotated[str | None, typer.Option("--id", help="Dataset id (default: the folder name).")] = None,
    density_grid: Annotated[int, typer.Option(help="Cells per side of the density field.")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Ingest N-body snapshots: Morton-ordered particles, FOF halos, merger trees, density field."""
    _use_config(config)
    from labservice.datasets.ingest.gadget import ingest_nbody

    url = ingest_nbody(snapshots, dest, sim_id=sim_id, density_grid=density_grid, overwrite=overwrite)
    typer.echo(f"ingested {url}")


@demo_app.command("build")
def demo_build(
    data: DataDir = Path("data"),
    size: Annotated[int, typer.Option(help="Grid size of the demo runs (64 or 128).")] = 64,
    only: Annotated[list[str] | None, typer.Option(help="Build only these datasets.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Build the demo datasets that are missing under --data."""
    _use_config(config)
    from labservice.datasets.demo.build import build_demos

    for line in build_demos(data, size=size, only=only, force=force):
        typer.echo(line)


def _token_store(token_db: Path | None):
    from labservice.settings import Settings
    from labservice.tokens import TokenStore

    where = token_db or Settings().tokens_database_url()
    if where is None:
        raise typer.BadParameter(
            "give --token-db, or set LABSERVICE_DATABASE_URL, LABSERVICE_TOKEN_DB or LABSERVICE_DATA_DIR"
        )
    return TokenStore(where)


TokenDb = Annotated[
    Path | None, typer.Option("--token-db", help="SQLite token file (default: LABSERVICE_DATABASE_URL, LABSERVICE_TOKEN_DB or <data>/labservice.sqlite).")
]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who the token is for.")],
    points_per_request: Annotated[int, typer.Option(help="Points x times per request.")] = 100_000,
    max_cutout_mb: Annotated[float, typer.Option(help="Largest synchronous cutout, MiB.")] = 1024.0,
    requests_per_minute: Annotated[int, typer.Option(help="Requests per minute.")] = 6000,
    max_concurrent: Annotated[int, typer.Option(help="Requests in flight at once.")] = 16,
    jobs: Annotated[bool, typer.Option(help="May submit batch jobs.")] = True,
    max_running_jobs: Annotated[int, typer.Option(help="Jobs running at once.")] = 4,
    scratch_gb: Annotated[float, typer.Option(help="Scratch space for job outputs, GiB.")] = 100.0,
    max_job_gb: Annotated[float, typer.Option(help="Largest job output, GiB.")] = 16.0,
    bytes_per_minute_mb: Annotated[float, typer.Option(help="Zarr chunk bytes served per minute, MiB.")] = 16384.0,
    zarr_requests_per_minute: Annotated[int, typer.Option(help="Zarr range reads per minute.")] = 60_000,
    zarr_max_concurrent: Annotated[int, typer.Option(help="Zarr range reads in flight at once.")] = 64,
    user: Annotated[str | None, typer.Option(help="The user it belongs to (`labservice user create`); "
                                             "default: a new user named after the token.")] = None,
    scopes: Annotated[str, typer.Option(help="What it may do: some of read,jobs,mydb,share.")] = "read,jobs,mydb,share",
    expires: Annotated[float | None, typer.Option(help="Hours until it stops working (default: never).")] = None,
    token_db: TokenDb = None,
    config: ConfigOpt = None,
) -> None:
    """Issue a token and print it once (only its hash is stored)."""
    import time

    _use_config(config)
    from labservice.limits import Limits

    if expires is not None and expires <= 0:
        raise typer.BadParameter("--expires is hours from now and must be > 0")

    limits = Limits(
        points_per_request=points_per_request,
        max_cutout_bytes=int(max_cutout_mb * 2**20),
        requests_per_minute=requests_per_minute,
        max_concurrent=max_concurrent,
        jobs_allowed=jobs,
        max_running_jobs=max_running_jobs if jobs else 0,
        scratch_bytes=int(scratch_gb * 2**30),
        max_job_bytes=int(max_job_gb * 2**30),
        bytes_per_minute=int(bytes_per_minute_mb * 2**20),
        zarr_requests_per_minute=zarr_requests_per_minute,
        zarr_max_concurrent=zarr_max_concurrent,
    )
    until = None if expires is None else time.time() + expires * 3600
    record, token = _token_store(token_db).create(name, limits, user=user, scopes=scopes, expires=until)
    typer.echo(f"token for {record.name} (id {record.id}, user {record.user}, scopes {','.join(sorted(record.scopes))}); "
               "shown once, keep it safe:")
    typer.echo(token)


@token_app.command("list")
def token_list(token_db: TokenDb = None, config: ConfigOpt = None) -> None:
    """List tokens: id, name, creation date, state and limits (never the secrets)."""
    _use_config(config)
    import datetime

    for r in _token_store(token_db).list():
        when = datetime.datetime.fromtimestamp(r.created, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        state = "revoked" if r.revoked else "active"
        lim = r.limits
        if r.revoked is False and not r.active():
            state = "expired"
        typer.echo(
            f"{r.id}  {r.name:<20} user={r.user or '-':<12} {when}  {state:<7}  points/request={lim.points_per_request} "
            f"cutout={lim.max_cutout_bytes / 2**20:.0f}MiB rpm={lim.requests_per_minute} "
            f"concurrent={lim.max_concurrent} jobs={'yes' if lim.jobs_allowed else 'no'}"
        )


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token id from `token list`.")],
                 token_db: TokenDb = None, config: ConfigOpt = None) -> None:
    """Revoke a token."""
    _use_config(config)
    _token_store(token_db).revoke(token_id)
    typer.echo(f"revoked {token_id}")


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="Lower-case letters, digits and _, starting with a letter.")],
    admin: Annotated[bool, typer.Option("--admin", help="An administrator.")] = False,
    mydb_mb: Annotated[int, typer.Option(help="MyDB storage quota, MiB.")] = 1024,
    max_links: Annotated[int, typer.Option(help="Download links alive at once.")] = 100,
    max_tokens: Annotated[int, typer.Option(help="Tokens alive at once (made through the API).")] = 20,
    token_db: TokenDb = None,
    config: ConfigOpt = None,
) -> None:
    """Create a user; then `labservice token create --user NAME --name WHAT` gives them a token."""
    _use_config(config)
    from labservice.users import UserLimits, UserStore

    store = UserStore(_token_store(token_db).db.url)
    user = store.create(name, admin=admin, limits=UserLimits(mydb_mb, max_links, max_tokens))
    typer.echo(f"user {user.name}{' (admin)' if user.admin else ''}: mydb {mydb_mb} MiB, {max_links} links, {max_tokens} tokens")


@user_app.command("list")
def user_list(token_db: TokenDb = None, config: ConfigOpt = None) -> None:
    """List users with their quotas."""
    _use_config(config)
    from labservice.users import UserStore

    for u in UserStore(_token_store(token_db).db.url).list():
        lim = u.limits
        typer.echo(f"{u.name:<24} {'admin' if u.admin else 'user ':<5}  mydb={lim.mydb_mb}MiB links={lim.max_links} tokens={lim.max_tokens}")


@user_app.command("limits")
def user_limits(
    name: Annotated[str, typer.Argument(help="The user.")],
    mydb_mb: Annotated[int | None, typer.Option(help="MyDB storage quota, MiB.")] = None,
    max_links: Annotated[int | None, typer.Option(help="Download links alive at once.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens alive at once.")] = None,
    token_db: TokenDb = None,
    config: ConfigOpt = None,
) -> None:
    """Change a user's quotas."""
    _use_config(config)
    from labservice.users import UserStore

    u = UserStore(_token_store(token_db).db.url).set_limits(name, mydb_mb=mydb_mb, max_links=max_links, max_tokens=max_tokens)
    typer.echo(f"user {u.name}: mydb {u.limits.mydb_mb} MiB, {u.limits.max_links} links, {u.limits.max_tokens} tokens")


@db_app.command("upgrade")
def db_upgrade(
    database_url: Annotated[
        str | None, typer.Option(help="sqlite:///file or postgresql://... (default: LABSERVICE_DATABASE_URL).")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="The data folder (default: LABSERVICE_DATA_DIR).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create or migrate the schema, then import the old tokens.sqlite / jobs.sqlite files found (once each).

    Old files: LABSERVICE_TOKEN_DB and LABSERVICE_JOB_DB, or <data>/tokens.sqlite and
    <scratch>/jobs.sqlite. Safe to run again: nothing is imported twice.
    """
    _use_config(config)
    from labservice.db import upgrade
    from labservice.settings import Settings

    overrides: dict[str, object] = {}
    if database_url:
        overrides["database_url"] = database_url
    if data is not None:
        overrides["data_dir"] = data
    settings = Settings(**overrides)
    legacy = settings.legacy_database_files()
    url = settings.database_url or settings.tokens_database_url() or settings.jobs_database_url()
    done = upgrade(url, legacy_tokens=legacy.get("tokens"), legacy_jobs=legacy.get("jobs"))
    typer.echo(f"{done['database']}: schema at revision {done['revision']}"
               f" ({'migrated' if done['migrated'] else 'already current'})")
    for table, n in done["imported"].items():  # type: ignore[union-attr]
        typer.echo(f"imported {n} {table} from {legacy[table]}")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective settings (file, then environment on top) as YAML, with secrets masked."""
    _use_config(config)
    from labservice.config_file import show

    typer.echo(show(_load_settings()), nl=False)


def main() -> None:
    try:
        app()
    except Exception as exc:  # one clear line for library errors, not a traceback
        from pydantic import ValidationError

        from labservice.errors import LabError

        if isinstance(exc, ValidationError) and exc.title == "Settings":
            from labservice.config_file import explain
            from labservice.settings import Settings

            typer.echo(f"error: {explain(exc, Settings)}", err=True)
            raise SystemExit(2) from None
        if isinstance(exc, LabError):
            typer.echo(f"error: {exc.message}", err=True)
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    main()
