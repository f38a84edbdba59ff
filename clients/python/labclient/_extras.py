"""Optional dependencies: import one, or say which extra of ``labservice-client`` brings it.

The core install (numpy, httpx, msgpack) answers points, jobs and raw downloads. Labelled results,
tables, files and progress bars need an extra; the first call that needs one names it::

    ImportError: cutouts as xarray need xarray: pip install "labservice-client[xarray]" (or [all])
"""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> the extra that installs it (keep in step with [project.optional-dependencies]).
EXTRA_OF = {
    "xarray": "xarray",
    "zarr": "xarray",
    "fsspec": "xarray",
    "aiohttp": "xarray",
    "dask": "xarray",
    "pandas": "pandas",
    "pyarrow": "pandas",
    "h5py": "files",
    "netCDF4": "files",
    "tqdm": "progress",
    "matplotlib": "jhtdb",
    "plotly": "jhtdb",
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def hint(module: str) -> str:
    """``pip install "labservice-client[<extra>]"`` for a top-level module name."""
    extra = EXTRA_OF.get(module.split(".")[0], "all")
    return f'pip install "labservice-client[{extra}]" (or [all])'


def require(module: str, purpose: str, otherwise: str = "") -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` saying what needs it and which extra to install.

    ``purpose`` completes the sentence "<purpose> need <module>", e.g. ``"cutouts as xarray"``;
    ``otherwise`` names a way around it that needs no extra.
    """
    try:
        return importlib.import_module(module)
    except MissingExtra:
        raise  # already says which extra
    except ImportError as exc:
        missing = (exc.name or module).split(".")[0]  # the module that is absent, not the one asked for
        tail = f"; or {otherwise}" if otherwise else ""
        raise MissingExtra(f"{purpose} need {missing}: {hint(missing)}{tail}") from exc
