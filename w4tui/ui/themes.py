"""Theme files: ``themes/*.toml`` shipped with the app, plus the user's ``<state>/themes/*.toml``.

A file is flat TOML (see themes/w4tui-dark.toml for the format) turned into a ``textual.theme.Theme``.
A broken file is reported as one line naming it and skipped; it never stops the app.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

DEFAULT_THEME = "w4tui-dark"
COLOURS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "warning",
    "error",
    "success",
)
KEYS = {"name", "dark", "variables", *COLOURS}


class ThemeFileError(ValueError):
    """A theme file that cannot be used; ``str()`` names the file and what is wrong."""


def builtin_dir() -> Path:
    """Inside the package when installed from a wheel, else the repository's themes/."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "themes"
    return packaged if packaged.is_dir() else here.parent / "themes"


def parse_theme(path: Path) -> Theme:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ThemeFileError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeFileError(f"{path}: cannot read it ({exc.__class__.__name__})") from None
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ThemeFileError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ThemeFileError(f"{path}: 'name' must be lowercase letters, digits and dashes (got {name!r})")
    if "primary" not in data:
        raise ThemeFileError(f"{path}: 'primary' is missing (the one colour every theme needs)")
    for key in COLOURS:
        if key in data:
            _colour(path, key, data[key])
    if not isinstance(data.get("dark", True), bool):
        raise ThemeFileError(f"{path}: 'dark' must be true or false")
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ThemeFileError(f"{path}: [variables] must hold strings")
    return Theme(
        name=name,
        dark=data.get("dark", True),
        variables=dict(variables),
        **{key: data[key] for key in COLOURS if key in data},
    )


def _colour(path: Path, key: str, value: object) -> None:
    if not isinstance(value, str):
        raise ThemeFileError(f"{path}: '{key}' must be a colour string like \"#1e88e5\" (got {value!r})")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeFileError(f"{path}: '{key}' = {value!r} is not a colour (try \"#1e88e5\")") from None


def load_themes(*dirs: Path) -> tuple[list[Theme], list[str]]:
    """Every usable theme in ``dirs`` (a later directory's theme replaces an earlier one of the same
    name), and a line per file that could not be used."""
    themes: dict[str, Theme] = {}
    problems: list[str] = []
    for directory in dirs:
        for path in sorted(directory.glob("*.toml")) if directory.is_dir() else ():
            try:
                theme = parse_theme(path)
            except ThemeFileError as exc:
                problems.append(str(exc))
                continue
            themes[theme.name] = theme
    return list(themes.values()), problems
