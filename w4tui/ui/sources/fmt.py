"""Short human forms of sizes, durations and times, shared by the panes."""

from __future__ import annotations

import os
import time
from pathlib import Path

_UNITS = ("B", "KB", "MB", "GB", "TB")


def size(n: float | None) -> str:
    """1536 -> '1.5 KB': decimal units (GB = 10^9 bytes), as `ollama list` (format.HumanBytes) and
    Finder show them, so a size here reads the same as there."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def duration(seconds: float | None) -> str:
    """3725 -> '1h02m'; 75 -> '1m15s'; None -> '-'."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def ago(then: float | None, now: float) -> str:
    if then is None:
        return "-"
    return "just now" if now - then < 5 else duration(now - then) + " ago"


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
