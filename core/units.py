"""How sizes and durations read, everywhere: the panes, the CLI, pre-flight, the night, every stage's errors.

Sizes are decimal (GB = 10^9 bytes), as `ollama list` (format.HumanBytes) and Finder show them, so one disk
reads the same in a disk-full error, in pre-flight, in the night's plan and in the Memory pane.
"""

from __future__ import annotations

_UNITS = ("B", "KB", "MB", "GB", "TB")


def size(n: float | None) -> str:
    """1536 -> '1.5 KB', 21.3e9 -> '21.3 GB'; None -> '-'."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def gb(n: float | None) -> str:
    """Memory and disk figures side by side (pre-flight, the Memory pane): GB with one decimal, so they
    compare at a glance, and whole MB below one GB ('341 MB', not '0.3 GB'); None -> '-'."""
    if n is None:
        return "-"
    return f"{n / 1e9:.1f} GB" if abs(n) >= 1e9 else f"{n / 1e6:.0f} MB"


def duration(seconds: float | None) -> str:
    """A time taken or left: 12 -> '0m12s', 75 -> '1m15s', 3725 -> '1h02m', 90000 -> '1d01h'; None, NaN
    or negative -> '-'. Always two fields, so a column of them lines up."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def rough_duration(seconds: float) -> str:
    """An estimate in words: '11 h 40 min', '1 h', '3 min' (whole minutes, at least one)."""
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


__all__ = ["size", "gb", "duration", "rough_duration"]
