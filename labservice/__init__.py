"""labservice: an open numerical laboratory.

``labservice.open_dataset(url)`` opens a dataset in process (next to the data, as on SciServer); the web
service in :mod:`labservice.app` serves the same calls over HTTP. Nothing heavy is imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from labservice.facade import Dataset


def open_dataset(url: str, storage_options: dict[str, Any] | None = None, **kwargs: Any) -> Dataset:
    """Open a dataset at a local path or any fsspec URL for in-process queries."""
    from labservice.facade import open_dataset as _open

    return _open(url, storage_options=storage_options, **kwargs)
