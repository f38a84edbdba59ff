"""Find datasets: every dataset folder under a data directory, or the entries of a YAML catalog.

A catalog file is a YAML list (or a mapping with a ``datasets`` list) of entries::

    - id: isotropic64                # optional: read from the dataset's metadata when left out
      url: ./data/isotropic64        # local path (relative to the catalog file) or any fsspec URL
    - url: s3://bucket/channel
      storage_options: {endpoint_url: "http://127.0.0.1:8333", anon: false}

Both functions return ``{id: url}``. The URLs are :class:`CatalogURL` strings, which also carry the entry's
``storage_options`` (``None`` when there are none), so callers can open remote stores.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from labservice.datasets.yaml_file import read_yaml
from labservice.errors import InvalidInput, LabError, NotFound
from labservice.storage import open_store
from labservice.storage.metadata import DatasetMeta

__all__ = ["CatalogEntry", "CatalogURL", "discover", "discover_simulations", "load_catalog"]

log = logging.getLogger(__name__)

DATASET_SUFFIXES = (".h5", ".hdf5")


class CatalogURL(str):
    """A dataset URL that remembers the fsspec ``storage_options`` needed to open it."""

    storage_options: dict[str, Any] | None

    def __new__(cls, url: str, storage_options: dict[str, Any] | None = None) -> CatalogURL:
        obj = super().__new__(cls, url)
        obj.storage_options = storage_options
        return obj


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    url: str
    storage_options: dict[str, Any] | None = None


def _read_meta(url: str, storage_options: dict[str, Any] | None = None) -> DatasetMeta:
    store = open_store(url, storage_options=storage_options)
    try:
        return store.meta
    finally:
        store.close()


def _usable(meta: DatasetMeta) -> bool:
    # Only a dataset whose ingest is known to be unfinished is left out; stores made by other means
    # (create_store directly) carry no ingest record and are served.
    return meta.provenance.get("ingest", {}).get("complete") is not False


def discover(data_dir: str | os.PathLike[str]) -> dict[str, CatalogURL]:
    """Every labservice dataset directly under ``data_dir``, by the id in its metadata.

    Parameters
    ----------
    data_dir : path-like
        Folder whose sub-folders (zarr) and ``.h5`` files (HDF5) are datasets. Hidden entries (such as the
        demo builder's ``.raw``) and entries that are not datasets are skipped, as are datasets whose
        ingest has not finished. When two datasets share an id, the first in name order wins.

    Returns
    -------
    dict
        ``{id: url}`` with absolute local paths.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise NotFound(f"data folder {root} not found")
    found: dict[str, CatalogURL] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        is_zarr = entry.is_dir() and (entry / "zarr.json").is_file()
        is_h5 = entry.is_file() and entry.suffix.lower() in DATASET_SUFFIXES
        if not (is_zarr or is_h5):
            continue
        try:
            meta = _read_meta(str(entry.resolve()))
        except (LabError, OSError, ValueError, KeyError) as exc:
            # One broken folder must not stop the others from being served.
            log.info("skipping %s: %s", entry, exc)
            continue
        if not _usable(meta):
            log.info("skipping %s: its ingest has not finished", entry)
            continue
        if meta.id in found:
            log.warning(
                "skipping %s: dataset id %r is already served from %s", entry, meta.id, found[meta.id]
            )
            continue
        found[meta.id] = CatalogURL(str(entry.resolve()))
    return found


def load_catalog(yaml_path: str | os.PathLike[str]) -> dict[str, CatalogURL]:
    """The datasets a YAML catalog lists, ``{id: url}``.

    Entries without an ``id`` are opened to read it from their metadata. Relative local URLs resolve
    against the catalog file's folder.

    Raises
    ------
    NotFound
        The catalog file is missing, or an entry without ``id`` cannot be opened.
    InvalidInput
        The file is not a list of entries, an entry has unknown keys, or two entries share an id.
    """
    path = Path(yaml_path)
    doc = read_yaml(path, "catalog")
    if isinstance(doc, dict) and "datasets" in doc:
        doc = doc["datasets"]
    if doc is None:
        doc = []
    if not isinstance(doc, list):
        raise InvalidInput(f"catalog {path} must be a YAML list of entries {{id?, url, storage_options?}}")
    out: dict[str, CatalogURL] = {}
    for i, raw in enumerate(doc):
        try:
            entry = CatalogEntry.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(
                f"catalog {path}, entry {i + 1}: {problems} (keys: id, url, storage_options)"
            ) from None
        url = entry.url
        if "://" not in url and not os.path.isabs(url):
            url = str((path.parent / url).resolve())
        dataset_id = entry.id or _read_meta(url, entry.storage_options).id
        if dataset_id in out:
            raise InvalidInput(f"catalog {path}, entry {i + 1}: id {dataset_id!r} is listed twice")
        out[dataset_id] = CatalogURL(url, entry.storage_options)
    return out


def discover_simulations(data_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Every cosmology dataset (a folder with ``simulation.json`` of kind "cosmology") under ``data_dir``.

    These are not field stores, so :func:`discover` skips them; the service opens them as
    :class:`~labservice.datasets.simulation.Simulation`. Returns ``{id: folder}``; hidden entries are skipped.
    """
    from labservice.datasets.simulation import is_simulation

    root = Path(data_dir)
    if not root.is_dir():
        raise NotFound(f"data folder {root} not found")
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "_")) or not entry.is_dir() or not is_simulation(entry):
            continue
        try:
            sim_id = json.loads((entry / "simulation.json").read_text())["id"]
        except (OSError, ValueError, KeyError) as exc:
            log.info("skipping %s: %s", entry, exc)
            continue
        found.setdefault(sim_id, entry.resolve())
    return found
