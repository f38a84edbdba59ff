"""One configuration file: ``--config labservice.yaml`` below the environment, secrets from files, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from labservice.cli import app as cli_app
from labservice.config_file import CONFIG_ENV, ConfigError, mask
from labservice.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "labservice.yaml"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No LABSERVICE_* variable from the outer environment leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("LABSERVICE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LABSERVICE_")}
    return subprocess.run([sys.executable, "-m", "labservice", *args], capture_output=True, text=True, timeout=120,
                          env={**base, **(env or {})}, cwd=cwd)  # fmt: skip


def test_example_file_names_every_setting_and_loads(clean_env: pytest.MonkeyPatch) -> None:
    keys = set(yaml.safe_load(EXAMPLE.read_text()))
    assert keys == set(Settings.model_fields), (
        f"deploy/labservice.yaml misses {sorted(set(Settings.model_fields) - keys)} "
        f"and has extra {sorted(keys - set(Settings.model_fields))}"
    )
    text = EXAMPLE.read_text()
    for name in Settings.model_fields:  # every line of the example is commented
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{name}:"))
        assert "#" in line or name.startswith("public_"), f"{name} has no comment in deploy/labservice.yaml"
    clean_env.setenv(CONFIG_ENV, str(EXAMPLE))
    s = Settings()
    assert s.engine == "external" and s.workers == 2 and s.dask_scheduler == "tcp://dask-scheduler:8786"
    assert s.cache_bytes == 4 << 30 and s.trusted_proxies == ["10.0.0.0/8"]


def test_environment_overrides_file_and_options_override_environment(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path / "lab.yaml", "workers: 3\ncache_bytes: 1000\nengine: external\n")
    clean_env.setenv(CONFIG_ENV, str(cfg))
    clean_env.setenv("LABSERVICE_WORKERS", "5")
    s = Settings()
    assert (s.workers, s.cache_bytes, s.engine) == (5, 1000, "external")
    assert Settings(workers=9).workers == 9
    clean_env.delenv(CONFIG_ENV)
    assert Settings().cache_bytes == 1 << 30  # no file: the default again


def test_secrets_from_files_in_the_yaml_and_in_the_environment(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    write(secrets / "db", "postgresql://lab:pw1@db:5432/lab\n")
    write(secrets / "redis", "redis://:pw2@redis:6379/0\n")
    write(secrets / "s3.json", json.dumps({"endpoint_url": "http://s3:8333", "key": "AK", "secret": "SK"}))
    cfg = write(tmp_path / "lab.yaml", "database_url_file: secrets/db\nscratch_options_file: secrets/s3.json\n"
                "redis_url: redis://from-file:6379/0\n")  # fmt: skip
    clean_env.setenv(CONFIG_ENV, str(cfg))
    clean_env.setenv("LABSERVICE_REDIS_URL_FILE", str(secrets / "redis"))
    s = Settings()
    assert s.database_url == "postgresql://lab:pw1@db:5432/lab"  # relative to the yaml, newline dropped
    assert s.scratch_options == {"endpoint_url": "http://s3:8333", "key": "AK", "secret": "SK"}
    assert s.redis_url == "redis://:pw2@redis:6379/0"  # LABSERVICE_X_FILE beats the file's value
    clean_env.setenv("LABSERVICE_REDIS_URL", "redis://plain:6379/1")
    assert Settings().redis_url == "redis://plain:6379/1"  # LABSERVICE_X beats LABSERVICE_X_FILE

    write(cfg, "database_url: sqlite:///x\ndatabase_url_file: secrets/db\n")
    with pytest.raises(ConfigError, match="both 'database_url' and 'database_url_file'"):
        Settings()
    write(cfg, "database_url_file: secrets/missing\n")
    with pytest.raises(ConfigError, match=r"database_url_file: cannot read .*secrets/missing"):
        Settings()


def test_relative_paths_are_relative_to_the_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    clean_env.setenv(CONFIG_ENV, str(write(sub / "lab.yaml", "data_dir: ../data\ncatalog: /abs/catalog.yaml\n")))
    s = Settings()
    assert s.data_dir is not None and s.data_dir.resolve() == (tmp_path / "data").resolve()
    assert s.catalog == Path("/abs/catalog.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cache_byts: 5\n", ["unknown key 'cache_byts'", "did you mean 'cache_bytes'", "Allowed keys: access_log"]),
        ("cache_bytes: -1\n", ["cache_bytes: Input should be greater than or equal to 0", "got -1", "config file"]),
        ("engine: sideways\n", ["engine: Input should be 'embedded' or 'external'", "got 'sideways'"]),
        ("workers: [1\n", ["not valid YAML at line 2, column 1"]),
        ("- workers\n", ["top level must be a mapping"]),
        ("database_url: 5\nredis_url: [x]\n", ["redis_url: Input should be a valid string", "got ***"]),
    ],
)
def test_a_wrong_file_is_one_clear_message_and_exit_code_2(tmp_path: Path, text: str, expected: list[str]) -> None:
    cfg = write(tmp_path / "lab.yaml", text)
    for command in (["serve"], ["engine"], ["config", "show"]):
        done = cli(*command, "--config", str(cfg))
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr
        for part in expected:
            assert part in done.stderr, (command, part, done.stderr)


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    done = cli("config", "show", env={"LABSERVICE_WORKERS": "many"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "workers:" in done.stderr and "environment variable LABSERVICE_WORKERS" in done.stderr, done.stderr
    missing = cli("serve", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr and "Traceback" not in missing.stderr


def test_config_show_prints_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    write(tmp_path / "s3.json", json.dumps({"endpoint_url": "http://s3:8333", "key": "AKIAXYZ", "secret": "S3SECRET"}))
    cfg = write(tmp_path / "lab.yaml", "database_url: postgresql://lab:DBPASS@db:5432/lab\nworkers: 3\n"
                "scratch_options_file: s3.json\ndatasets: {iso: 's3://u:DSPASS@host/iso.zarr'}\n")  # fmt: skip
    done = cli("config", "show", "--config", str(cfg), env={"LABSERVICE_REDIS_URL": "redis://:RPASS@r:6379/0",
                                                             "LABSERVICE_CACHE_BYTES": "12345"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    for secret in ("DBPASS", "RPASS", "AKIAXYZ", "S3SECRET", "DSPASS"):
        assert secret not in done.stdout, secret
    shown = yaml.safe_load(done.stdout)
    assert set(shown) == set(Settings.model_fields)
    assert shown["database_url"] == "postgresql://lab:***@db:5432/lab"
    assert shown["redis_url"] == "redis://:***@r:6379/0"
    assert shown["scratch_options"] == {"endpoint_url": "http://s3:8333", "key": "***", "secret": "***"}
    assert (shown["workers"], shown["cache_bytes"], shown["engine"]) == (3, 12345, "embedded")


def test_mask_keeps_what_is_not_secret() -> None:
    assert mask("postgresql://lab@db/lab") == "postgresql://lab@db/lab"
    assert mask({"anon": False, "client_kwargs": {"aws_secret_access_key": "x", "region_name": "r"}}) == {
        "anon": False, "client_kwargs": {"aws_secret_access_key": "***", "region_name": "r"}}  # fmt: skip


def _leaf_commands(group: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group (typer's own, not always a click.Group)
            out |= _leaf_commands(cmd, (*prefix, name))
        else:
            out[(*prefix, name)] = cmd
    return out


def test_every_command_accepts_config() -> None:
    leaves = _leaf_commands(typer.main.get_command(cli_app))  # type: ignore[arg-type]
    assert {("serve",), ("engine",), ("ingest",), ("token", "create"), ("db", "upgrade"), ("config", "show")} <= set(leaves)
    lacking = [" ".join(path) for path, cmd in leaves.items()
               if not any("--config" in p.opts for p in cmd.params)]  # fmt: skip
    assert not lacking, f"commands without --config: {lacking}"


def test_token_and_db_commands_use_the_database_the_file_names(tmp_path: Path) -> None:
    db = tmp_path / "platform.sqlite"
    cfg = write(tmp_path / "lab.yaml", f"database_url: sqlite:///{db}\n")
    up = cli("db", "upgrade", "--config", str(cfg))
    assert up.returncode == 0 and str(db) in up.stdout, up.stderr
    made = cli("token", "create", "--name", "from-config", "--config", str(cfg))
    assert made.returncode == 0, made.stderr
    listed = cli("token", "list", "--config", str(cfg))
    assert listed.returncode == 0 and "from-config" in listed.stdout, listed.stderr
    assert "from-config" not in cli("token", "list", "--token-db", str(tmp_path / "other.sqlite")).stdout


def test_serve_workers_read_the_file_and_its_secret(tmp_path: Path, redis_server: Any,
                                                    clean_env: pytest.MonkeyPatch) -> None:
    """`serve --config F` with `workers: 2` in F: both worker processes (started by uvicorn, not by the
    command) take every setting from the file, including redis_url from a secret file."""
    import time

    import httpx

    from labservice.devserver import ServeProcess, write_sample_datasets

    ids = sorted(write_sample_datasets(tmp_path / "data", n=16))
    etc = tmp_path / "etc"
    (etc / "secrets").mkdir(parents=True)
    write(etc / "secrets" / "redis", redis_server.url + "\n")
    cfg = write(etc / "lab.yaml", "data_dir: ../data\nworkers: 2\nredis_url_file: secrets/redis\nmetrics: false\n"
                "jobs_enabled: false\ntoken_db: ../tokens.sqlite\n")  # fmt: skip
    with ServeProcess(None, {}, tmp_path / "serve.log", args=["--config", str(cfg)]) as server:
        server.wait_ready()
        deadline = time.monotonic() + 60
        while server.started_workers() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.started_workers() == 2, server.log_tail()
        for _ in range(12):  # a fresh connection each time, so both workers answer some
            with httpx.Client(base_url=server.url, timeout=10) as http:
                assert http.get("/metrics").status_code == 404  # metrics: false
                ready = http.get("/readyz").json()
                assert ready["limits"] == "shared" and ready["checks"]["redis"]["ok"], ready  # redis_url_file
                assert {f"storage:{i}" for i in ids} <= set(ready["checks"]), ready  # data_dir, relative
