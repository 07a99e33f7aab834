"""Settings the app writes itself (theme, ...), kept in ``<state>/settings.toml``.

They live apart from config.toml on purpose: rewriting the user's config.toml with tomli-w would drop
every comment in it. A broken settings file is ignored (and reported), never fatal.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from core.config import Config
from core.fsutil import atomic_write_bytes


def settings_path(config: Config) -> Path:
    return config.paths.state / "settings.toml"


def load_settings(config: Config) -> tuple[dict[str, Any], str | None]:
    """The saved settings, and a one-line problem when the file could not be used."""
    path = settings_path(config)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh), None
    except FileNotFoundError:
        return {}, None
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        return {}, f"{path}: ignored, not readable settings ({exc})"


def save_setting(config: Config, key: str, value: Any) -> None:
    settings, _ = load_settings(config)
    settings[key] = value
    atomic_write_bytes(settings_path(config), tomli_w.dumps(settings).encode("utf-8"))
