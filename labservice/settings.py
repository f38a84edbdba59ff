"""Service configuration: one settings class, read from ``LABSERVICE_*`` environment variables.

Nothing is read at import time; :func:`labservice.app.create_app` builds a :class:`Settings` when it is
not handed one, so tests pass their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1 << 20


class Settings(BaseSettings):
    """Everything the web service can be configured with.

    Every field can be set from the environment, for example ``LABSERVICE_DATA_DIR=/data`` or
    ``LABSERVICE_PUBLIC_POINTS_PER_REQUEST=1024``.
    """

    model_config = SettingsConfigDict(env_prefix="LABSERVICE_", extra="ignore")

    # -- what is served ------------------------------------------------------------------------------
    data_dir: Path | None = Field(default=None, description="Serve every dataset found under this folder.")
    catalog: Path | None = Field(default=None, description="A YAML catalog listing dataset ids and URLs.")
    datasets: dict[str, str] = Field(
        default_factory=dict, description="Extra datasets to serve, id -> URL (JSON in the environment)."
    )
    cache_bytes: int = Field(default=1024 * MIB, ge=0, description="Chunk cache size shared by all datasets.")

    # -- access --------------------------------------------------------------------------------------
    token_db: Path | None = Field(
        default=None, description="SQLite file holding token hashes; default <data_dir>/tokens.sqlite."
    )
    max_body_bytes: int = Field(default=256 * MIB, ge=1024, description="Largest request body accepted.")
    sync_cutout_bytes: int = Field(
        default=1024 * MIB,
        ge=0,
        description="Largest cutout served synchronously to any caller; above it, use a job.",
    )

    cors_origins: list[str] = Field(
        default_factory=list,
        description='Browser origins allowed to call the API cross-site, e.g. ["https://lab.example.org"] '
        "(JSON in the environment); empty (the default) turns CORS off.",
    )

    # Public (no token) limits.
    public_points_per_request: int = Field(default=4096, ge=1)
    public_max_cutout_bytes: int = Field(default=16 * MIB, ge=0)
    public_requests_per_minute: int = Field(default=600, ge=1)
    public_max_concurrent: int = Field(default=4, ge=1)
    public_bytes_per_minute: int = Field(
        default=1024 * MIB, ge=1, description="Bulk bytes (zarr chunk reads) a public caller may read per minute."
    )

    # -- cosmology SQL (POST /datasets/{sim}/sql, DuckDB) --------------------------------------------
    sql_max_rows: int = Field(
        default=100_000, ge=1, le=10_000_000,
        description="Most rows a query may return; more is a 413 unless the caller asks for truncate=true.",
    )
    sql_timeout_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="Queries running longer are interrupted (a 413)."
    )
    sql_memory_limit: str = Field(
        default="256MB", pattern=r"^[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)$",
        description="DuckDB memory limit per simulation (nothing spills to disk); a query needing more is a 413.",
    )
    sql_threads: int = Field(default=1, ge=1, le=64, description="DuckDB worker threads per simulation.")

    # -- jobs (used by the jobs router) --------------------------------------------------------------
    jobs_enabled: bool | None = Field(
        default=None,
        description="Run the batch-job engine (Dask). Unset: on for `labservice serve`, off for create_app().",
    )
    scratch_url: str | None = Field(
        default=None, description="Where job outputs go (local path or fsspec URL); default <data_dir>/scratch."
    )
    scratch_options: dict[str, Any] | None = Field(
        default=None,
        description='fsspec options for scratch_url, e.g. {"endpoint_url": "http://s3:8333", "key": "..."} '
        "(JSON in the environment); none for a local scratch folder.",
    )
    job_db: Path | None = Field(
        default=None,
        description="SQLite file of the job registry; default <scratch_url>/jobs.sqlite, or "
        "<data_dir>/jobs.sqlite when the scratch is remote.",
    )
    dask_scheduler: str | None = Field(default=None, description="Address of a Dask scheduler for jobs.")
    job_ttl_days: float = Field(
        default=7.0, gt=0, description="Job outputs are deleted after this many days."
    )

    def token_db_path(self) -> Path | None:
        """The SQLite token file in use, or None when tokens are not configured."""
        if self.token_db is not None:
            return self.token_db
        if self.data_dir is not None:
            return self.data_dir / "tokens.sqlite"
        return None
