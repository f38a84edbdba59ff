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

DataDir = Annotated[Path, typer.Option("--data", help="Folder holding the datasets.")]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data: Annotated[Path | None, typer.Option("--data", help="Serve every dataset under this folder.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="A YAML catalog listing dataset URLs.")] = None,
) -> None:
    """Serve the HTTP API (settings also come from LABSERVICE_* environment variables)."""
    from labservice.app import serve as run_server

    run_server(host=host, port=port, data_dir=data, catalog=catalog)


@app.command()
def ingest(
    descriptor: Annotated[Path, typer.Argument(help="The ingest descriptor (YAML).", exists=True, dir_okay=False)],
    overwrite: Annotated[bool, typer.Option(help="Start again instead of resuming.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Turn simulation output (HDF5 files) into a labservice dataset, shard by shard, resumably."""
    from labservice.datasets.ingest import ingest_descriptor

    url = ingest_descriptor(descriptor, overwrite=overwrite, progress=progress)
    typer.echo(f"ingested {url}")


@demo_app.command("build")
def demo_build(
    data: DataDir = Path("data"),
    size: Annotated[int, typer.Option(help="Grid size of the demo runs (64 or 128).")] = 64,
    only: Annotated[list[str] | None, typer.Option(help="Build only these datasets.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
) -> None:
    """Build the demo datasets that are missing under --data."""
    from labservice.datasets.demo import build_demos

    for line in build_demos(data, size=size, only=only, force=force):
        typer.echo(line)


def main() -> None:
    try:
        app()
    except Exception as exc:  # one clear line for library errors, not a traceback
        from labservice.errors import LabError

        if isinstance(exc, LabError):
            typer.echo(f"error: {exc.message}", err=True)
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    main()
