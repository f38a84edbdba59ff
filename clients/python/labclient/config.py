"""Where the server address and token come from: flags, environment, or a profile in config.toml.

``$XDG_CONFIG_HOME/labservice/config.toml`` (default ``~/.config/labservice/config.toml``)::

    [default]
    url = "http://127.0.0.1:8000"

    [cluster]
    url = "https://lab.example.org"
    token = "lab_..."

Order, first found wins: ``--url``/``--token``; the profile named by ``--profile`` (or
``$LABSERVICE_PROFILE``); ``$LABSERVICE_URL``/``$LABSERVICE_TOKEN``; the ``[default]`` profile;
``http://127.0.0.1:8000`` and no token.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):  # noqa: UP036 - the client supports 3.10
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_URL = "http://127.0.0.1:8000"
KEYS = ("url", "token")


class ConfigError(ValueError):
    """The configuration file or the profile asked for is wrong; the message says what to change."""


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None
    source: str  # where the URL came from, for error messages


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/labservice/config.toml``, or ``~/.config/labservice/config.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "labservice" / "config.toml"


def load_profiles(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every profile in the file (``{}`` when there is no file)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    profiles: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: {name!r} must be a table like [{name}] with url = ... and token = ..."
            )
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise ConfigError(f"{path}: profile [{name}] has unknown keys {unknown}; allowed: url, token")
        profiles[name] = {k: str(v) for k, v in table.items()}
    return profiles


def resolve(
    url: str | None = None, token: str | None = None, profile: str | None = None, path: Path | None = None
) -> Connection:
    """The server address and token to use (see the module docstring for the order)."""
    path = path or config_path()
    profile = profile or os.environ.get("LABSERVICE_PROFILE") or None
    profiles = load_profiles(path)
    chosen: dict[str, Any] = {}
    source = "the built-in default"
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"no profile [{profile}] in {path} (profiles there: {known})")
        chosen = profiles[profile]
        source = f"profile [{profile}] in {path}"
    env_url = os.environ.get("LABSERVICE_URL") or None
    env_token = os.environ.get("LABSERVICE_TOKEN") or None
    default = profiles.get("default", {})
    if url:
        source = "--url"
    elif chosen.get("url"):
        url = chosen["url"]
    elif env_url:
        url, source = env_url, "LABSERVICE_URL"
    elif default.get("url"):
        url, source = default["url"], f"profile [default] in {path}"
    else:
        url = DEFAULT_URL
    if not token:
        token = chosen.get("token") or env_token or (None if profile else default.get("token")) or None
    return Connection(url.rstrip("/"), token, source)
