"""Reading the YAML files users write (catalogs, ingest descriptors), with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from labservice.errors import InvalidInput, NotFound


def read_yaml(path: Path, what: str) -> Any:
    """The parsed contents of ``path``; ``what`` ("catalog", "descriptor") names the file in errors."""
    if not path.is_file():
        raise NotFound(f"{what} file {path} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{what} {path} is not valid YAML: {exc}") from None
