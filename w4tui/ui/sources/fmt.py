"""Short human forms of times, numbers and paths, shared by the panes (sizes and durations: core/units.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core import units


def ago(then: float | None, now: float) -> str:
    if then is None:
        return "-"
    return "just now" if now - then < 5 else units.duration(now - then) + " ago"


def clock(t: float | None, now: float) -> str:
    """A time of day for today's times, else a date and time."""
    if t is None:
        return "-"
    local, today = time.localtime(t), time.localtime(now)
    same_day = local[:3] == today[:3]
    return time.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M", local)


def number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return (
        f"{value:.{digits}g}"
        if abs(value) < 1e-3 or abs(value) >= 1e5
        else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    )


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int, low: float | None = None, high: float | None = None) -> str:
    """The last ``width`` values as block characters; a fixed ``low``/``high`` keeps scales comparable."""
    values = values[-width:]
    if not values:
        return ""
    lo = min(values) if low is None else low
    hi = max(values) if high is None else high
    span = hi - lo
    if span <= 0:
        return SPARK[0] * len(values)
    top = len(SPARK) - 1
    return "".join(SPARK[max(0, min(top, round((v - lo) / span * top)))] for v in values)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar with eighth-block resolution."""
    fraction = max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + ("" if part == 0 else " ▏▎▍▌▋▊▉"[part])
    return text.ljust(width)[:width]


def path(value: str | os.PathLike[str] | None, base: Path) -> str:
    """A path as the user thinks of it: relative to the config's directory when inside it, else with ~."""
    if not value:
        return "-"
    p = Path(value)
    try:
        return str(p.relative_to(base))
    except ValueError:
        home = str(Path.home())
        text = str(p)
        return "~" + text[len(home) :] if home != "/" and text.startswith(home + os.sep) else text


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` in the middle with "…": build names differ at both ends (date, quant)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + "…" + text[len(text) - tail :]


def fit_name(name: str, width: int) -> str:
    """A model name cut to ``width`` from the front, at a separator, while at least half the width is left:
    ``web4-agent:build-20261201-095421-Q4_K_M`` -> ``…20261201-095421-Q4_K_M`` (the part that tells builds
    apart; the prefix is the same on every row). Else cut in the middle."""
    if len(name) <= width:
        return name
    for i, char in enumerate(name):
        if char in ":-_./" and len(name) - i <= width and len(name) - i - 1 >= width // 2:
            return "…" + name[i + 1 :]
    return fit(name, width)
