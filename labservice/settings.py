"""Service configuration: one settings class, read from ``LABSERVICE_*`` environment variables and the
YAML file named by ``--config`` / ``LABSERVICE_CONFIG`` (below the environment; see
:mod:`labservice.config_file` for the order and for secrets kept in files).

Nothing is read at import time; :func:`labservice.app.create_app` builds a :class:`Settings` when it is
not handed one, so tests pass their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

MIB = 1 << 20


class Settings(BaseSettings):
    """Everything the web service can be configured with.

    Every field can be set from the environment, for example ``LABSERVICE_DATA_DIR=/data`` or
    ``LABSERVICE_PUBLIC_POINTS_PER_REQUEST=1024``.
    """

    model_config = SettingsConfigDict(env_prefix="LABSERVICE_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: options, LABSERVICE_X, LABSERVICE_X_FILE, the YAML file, defaults.
        from labservice.config_file import EnvFileSecretSource, YamlFileSource

        return (init_settings, env_settings, EnvFileSecretSource(settings_cls), YamlFileSource(settings_cls))

    # -- what is served ------------------------------------------------------------------------------
    data_dir: Path | None = Field(default=None, description="Serve every dataset found under this folder.")
    catalog: Path | None = Field(default=None, description="A YAML catalog listing dataset ids and URLs.")
    datasets: dict[str, str] = Field(
        default_factory=dict, description="Extra datasets to serve, id -> URL (JSON in the environment)."
    )
    cache_bytes: int = Field(default=1024 * MIB, ge=0, description="Chunk cache size shared by all datasets.")

    # -- access --------------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="The platform database (tokens, jobs, quotas): sqlite:///path or postgresql://user@host/db. "
        "Unset: the embedded SQLite file <data_dir>/labservice.sqlite (token_db / job_db, when set, name the "
        "SQLite files instead). Create or migrate the schema with `labservice db upgrade`.",
    )
    token_db: Path | None = Field(
        default=None,
        description="SQLite file holding token hashes when database_url is unset (default "
        "<data_dir>/labservice.sqlite); with database_url set, an old tokens file `labservice db upgrade` imports.",
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

    # -- scaling out (several worker processes or hosts) -----------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db shared by every process and host: rate limits, requests in flight "
        "and byte budgets then hold in total. Unset (the default): each process counts on its own. Required "
        "for `labservice serve --workers N` with N > 1.",
    )
    redis_inflight_ttl: float = Field(
        default=30.0, gt=1, le=3600,
        description="Seconds after which the in-flight slots of a crashed process expire in Redis.",
    )
    workers: int = Field(default=1, ge=1, le=256, description="Server processes of `labservice serve`.")
    root_path: str = Field(
        default="", pattern=r"^(/[^/?#\s]+)*$",
        description='The path prefix a reverse proxy serves labservice under, e.g. "/lab" (no trailing slash).',
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description='IPs or CIDRs of reverse proxies, e.g. ["10.0.0.0/8"] (JSON in the environment): only when the '
        "direct peer is one of them does X-Forwarded-For name the client for public limits.",
    )

    # -- observability (/metrics, the access log) ------------------------------------------------------
    metrics: bool = Field(
        default=True, description="Serve /metrics (Prometheus) and count requests: on or off."
    )
    access_log: bool = Field(
        default=True, description="One JSON line per request on the logger labservice.access: on or off."
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="Folder where `labservice serve` keeps the worker processes' metric files (emptied at start); "
        "default: a new temporary folder per run, or PROMETHEUS_MULTIPROC_DIR when set.",
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
    sql_job_timeout_seconds: float = Field(
        default=3600.0, gt=0, le=7 * 86400, description="Time limit of one submitted SQL query (job kind sql)."
    )

    # -- MyDB (personal tables, Parquet in the user store) ---------------------------------------------
    user_store_url: str | None = Field(
        default=None,
        description="Where MyDB tables are kept (a local folder or fsspec URL such as s3://bucket/mydb); "
        "default <data_dir>/mydb (without a data_dir: beside token_db). Every API process and job engine must see "
        "the same store.",
    )
    user_store_options: dict[str, Any] | None = Field(
        default=None,
        description='fsspec options for user_store_url, e.g. {"endpoint_url": "http://s3:8333", "key": "..."} '
        "(JSON in the environment).",
    )

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
    engine: Literal["embedded", "external"] = Field(
        default="embedded",
        description="embedded (the default): `labservice serve` runs the job engine in its own process. external: "
        "API processes only record and read jobs; `labservice engine` processes (one or more, any host) run them, "
        "sharing the platform database (database_url), the scratch store and the Dask scheduler.",
    )
    engine_lease_seconds: float = Field(
        default=10.0, ge=1, le=3600,
        description="An engine's claim on a job lasts this long without a heartbeat (renewed every quarter of it); "
        "after it, another engine takes the job over and resumes it from its committed parts.",
    )
    engine_poll_seconds: float = Field(
        default=0.5, gt=0, le=60, description="How often an engine looks for new jobs and for cancel requests."
    )
    engine_max_jobs: int = Field(default=16, ge=1, le=100_000, description="Jobs one engine runs at once.")
    job_options: dict[str, int] = Field(
        default_factory=dict,
        description='Sizing of job parts, e.g. {"shard_edge": 64, "task_bytes": 16777216} (JSON in the environment): '
        "shard_edge, chunk_edge, task_bytes, points_per_task, track_segment_steps, retries. API processes and "
        "engines must be given the same values.",
    )
    quicklook_renderer: Literal["fast", "matplotlib"] = Field(
        default="fast",
        description="How slice.png is drawn: fast (matplotlib draws the frame once, numpy paints the data "
        "in) or matplotlib (the whole figure per image, about 100 ms of CPU each; the reference).",
    )

    def token_db_path(self) -> Path | None:
        """The SQLite file holding tokens (embedded mode), or None when tokens are not configured."""
        if self.token_db is not None:
            return self.token_db
        if self.data_dir is not None:
            return self.data_dir / "labservice.sqlite"
        return None

    def tokens_database_url(self) -> str | None:
        """Where tokens live: database_url, else the SQLite file of :meth:`token_db_path` (None: no tokens)."""
        from labservice.db.connect import normalize_url

        if self.database_url:
            return normalize_url(self.database_url)
        path = self.token_db_path()
        return None if path is None else normalize_url(path)

    def jobs_database_url(self) -> str:
        """Where job records live: database_url, else job_db, else <data_dir or cwd>/labservice.sqlite."""
        from labservice.db.connect import normalize_url

        if self.database_url:
            return normalize_url(self.database_url)
        return normalize_url(self.job_db or (self.data_dir or Path.cwd()) / "labservice.sqlite")

    def legacy_database_files(self) -> dict[str, Path]:
        """The SQLite files of earlier versions that `labservice db upgrade` imports when they exist."""
        data = self.data_dir or Path.cwd()
        scratch = self.scratch_url or str(data / "scratch")
        found = {
            "tokens": self.token_db or data / "tokens.sqlite",
            "jobs": self.job_db or (Path(scratch) / "jobs.sqlite" if "://" not in scratch else data / "jobs.sqlite"),
        }
        return {k: p for k, p in found.items() if p.is_file()}
