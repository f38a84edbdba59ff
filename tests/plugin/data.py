"""Where test data comes from: the demo datasets (built by ``make demo``) and small analytic samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labservice.devserver import write_sample_datasets

REPO = Path(__file__).resolve().parents[2]


def require_demo(demo_data: Path, name: str = "isotropic64") -> Path:
    """The folder of one demo dataset; a clear error when the demo data was not built."""
    folder = demo_data / name
    if not folder.is_dir():
        raise RuntimeError(
            f"the demo data is missing under {demo_data}: run `make demo` (or set LABSERVICE_DEMO_DATA)"
        )
    return folder


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The folder with the demo datasets (``make test`` sets LABSERVICE_DEMO_DATA)."""
    return Path(os.environ.get("LABSERVICE_DEMO_DATA", REPO / "data"))


@pytest.fixture(scope="session")
def built_demo_data(demo_data: Path) -> Path:
    """``demo_data``, checked to hold the demo datasets (for folders that serve them)."""
    require_demo(demo_data)
    return demo_data


@pytest.fixture(scope="session")
def sample_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The two 16^3 sample datasets (``periodic16``, ``wall16``), written once per session: id -> URL."""
    return write_sample_datasets(tmp_path_factory.mktemp("sample-data"), n=16)


@pytest.fixture(scope="session")
def sample_dir(sample_urls: dict[str, str]) -> Path:
    """The folder of the sample datasets."""
    return Path(sample_urls["periodic16"]).parent


@pytest.fixture(scope="session")
def served_data(sample_urls: dict[str, str]) -> dict[str, str] | Path:
    """The start of the fixture chain: what the server serves, as ``{id: url}`` or a data folder.

    The sample datasets by default; a folder's conftest overrides it (the demo data, a simulation).
    """
    return sample_urls
