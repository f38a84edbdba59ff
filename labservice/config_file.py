"""One configuration file for every labservice process: ``labservice <command> --config labservice.yaml``.

Where a setting comes from, highest first:

1. a command's own options (``--data``, ``--workers``, ...);
2. ``LABSERVICE_<FIELD>`` environment variables;
3. ``LABSERVICE_<FIELD>_FILE`` environment variables: a file holding the value (a mounted secret);
4. the YAML file named by ``--config`` or ``LABSERVICE_CONFIG``: ``<field>: value``, or ``<field>_file: path``
   for a value kept in a file (``database_url_file: /run/secrets/database_url``);
5. the defaults in :class:`labservice.settings.Settings`.

``--config`` sets ``LABSERVICE_CONFIG`` for the process, so the worker processes of ``serve --workers N``
read the same file. Relative paths in the file (``data_dir``, ``catalog``, ``*_file``, ...) are relative
to the file's folder. A ``*_file`` value is the file's text without its trailing newline; for a field
holding a mapping or list (``scratch_options``) the text is parsed as YAML/JSON.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from labservice.errors import InvalidInput

CONFIG_ENV = "LABSERVICE_CONFIG"
ENV_PREFIX = "LABSERVICE_"
FILE_SUFFIX = "_file"

# Fields whose values are masked by `labservice config show` (URLs lose their password; mappings lose the
# values of keys that look like credentials).
SECRET_FIELDS = ("database_url", "redis_url", "scratch_options", "datasets")
_SECRET_KEY = re.compile(r"(key|secret|token|password|passwd|credential|session)", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)", re.I)
MASK = "***"


class ConfigError(InvalidInput):
    """The configuration file or a setting is wrong: the message names the key and what is allowed."""

    code = "invalid_config"


def _is_container(settings_cls: type[BaseSettings], name: str) -> bool:
    """True when the field holds a mapping or list (its ``*_file`` text is parsed, not taken verbatim)."""
    ann = settings_cls.model_fields[name].annotation
    origins = {typing.get_origin(a) or a for a in (typing.get_args(ann) or (ann,))} | {typing.get_origin(ann)}
    return bool(origins & {dict, list})


def _read_secret(settings_cls: type[BaseSettings], field: str, path: Path, key: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror or exc}); give a readable file holding the "
                          f"value of {field}") from None
    if not _is_container(settings_cls, field):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: {path} is not YAML/JSON ({exc.__class__.__name__}); it must hold the mapping "
                          f"for {field}") from None


def allowed_keys(settings_cls: type[BaseSettings]) -> list[str]:
    return sorted(settings_cls.model_fields)


def _unknown_key_message(key: str, settings_cls: type[BaseSettings], where: str) -> str:
    names = allowed_keys(settings_cls)
    close = difflib.get_close_matches(key.removesuffix(FILE_SUFFIX), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"{where}: unknown key {key!r}{hint}. Allowed keys: {', '.join(names)}, or <key>{FILE_SUFFIX} "
            f"naming a file that holds the value (see deploy/labservice.yaml)")


def load_yaml(path: Path, settings_cls: type[BaseSettings]) -> dict[str, Any]:
    """The settings in one YAML file, checked for unknown keys, with ``*_file`` values read."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc}); give --config an "
                          "existing YAML file or unset LABSERVICE_CONFIG") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of setting: value, "
                          f"not a {type(raw).__name__}")
    base = path.parent
    out: dict[str, Any] = {}
    fields = settings_cls.model_fields
    for key, value in raw.items():
        key = str(key)
        if key in fields:
            out[key] = value
            continue
        field = key.removesuffix(FILE_SUFFIX)
        if key.endswith(FILE_SUFFIX) and field in fields:
            if field in raw:
                raise ConfigError(f"config file {path}: both {field!r} and {key!r} are set; keep one")
            if not isinstance(value, str) or not value:
                raise ConfigError(f"config file {path}: {key} must be the path of a file holding {field}")
            out[field] = _read_secret(settings_cls, field, base / value, key)
            continue
        raise ConfigError(_unknown_key_message(key, settings_cls, f"config file {path}"))
    # Paths in the file are relative to the file, wherever the process was started.
    for name, value in list(out.items()):
        if isinstance(value, str) and value and _is_path(settings_cls, name) and not Path(value).is_absolute():
            out[name] = str(base / value)
    return out


def _is_path(settings_cls: type[BaseSettings], name: str) -> bool:
    ann = settings_cls.model_fields[name].annotation
    return Path in (typing.get_args(ann) or (ann,))


def config_path() -> Path | None:
    """The file named by ``LABSERVICE_CONFIG`` (set by ``--config``), or None."""
    value = os.environ.get(CONFIG_ENV, "").strip()
    return Path(value) if value else None


class YamlFileSource(PydanticBaseSettingsSource):
    """Settings from the YAML file of ``LABSERVICE_CONFIG`` (below the environment)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_path()
        return {} if path is None else load_yaml(path, self.settings_cls)


class EnvFileSecretSource(PydanticBaseSettingsSource):
    """``LABSERVICE_<FIELD>_FILE=/run/secrets/x``: the value read from that file (below ``LABSERVICE_<FIELD>``)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            var = f"{ENV_PREFIX}{name.upper()}{FILE_SUFFIX.upper()}"
            value = os.environ.get(var)
            if value:
                out[name] = _read_secret(self.settings_cls, name, Path(value), var)
        return out


# -- explaining errors and showing settings ---------------------------------------------------------------


def _origin(name: str, file_keys: set[str]) -> str:
    if f"{ENV_PREFIX}{name.upper()}" in os.environ:
        return f"environment variable {ENV_PREFIX}{name.upper()}"
    if f"{ENV_PREFIX}{name.upper()}_FILE" in os.environ:
        return f"the file named by {ENV_PREFIX}{name.upper()}_FILE"
    if name in file_keys:
        return f"config file {config_path()}"
    return "the command line"


def explain(exc: ValidationError, settings_cls: type[BaseSettings]) -> str:
    """One readable message for a pydantic error: each bad key, where it came from, and what is allowed."""
    path = config_path()
    try:
        file_keys = set(load_yaml(path, settings_cls)) if path else set()
    except ConfigError:
        file_keys = set()
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        got = err.get("input")
        shown = MASK if name in SECRET_FIELDS else repr(got)
        field = settings_cls.model_fields.get(name)
        about = f" ({field.description.split('. ')[0].rstrip('.')})" if field is not None and field.description else ""
        lines.append(f"{name}: {err['msg']}, got {shown} from {_origin(name, file_keys)}{about}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", url)


def mask(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with passwords in URLs and credential-like mapping values replaced by ``***``."""
    if isinstance(value, dict):
        return {k: (MASK if _SECRET_KEY.search(str(k)) and v not in (None, "") else mask(v, str(k)))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, key) for v in value]
    if isinstance(value, str):
        return mask_url(value)
    return value


def effective(settings: BaseSettings) -> dict[str, Any]:
    """Every setting as plain YAML-able values, secrets masked."""
    data = settings.model_dump(mode="json")
    return {name: mask(value, name) for name, value in data.items()}


def show(settings: BaseSettings) -> str:
    """The effective settings as YAML, secrets masked, with a header naming the file read."""
    path = config_path()
    head = f"# effective labservice settings (config file: {path or 'none'}; environment overrides it)\n"
    return head + yaml.safe_dump(effective(settings), sort_keys=True, default_flow_style=False)
