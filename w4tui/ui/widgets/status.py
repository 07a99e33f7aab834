"""Colours and symbols for run statuses, shared by the panes."""

from __future__ import annotations

from rich.text import Text

from core.names import RunStatus

STYLE = {
    RunStatus.RUNNING: "bold $accent",
    RunStatus.STARTING: "$accent",
    RunStatus.CANCELLING: "$warning",
    RunStatus.SUCCEEDED: "$success",
    RunStatus.FAILED: "bold $error",
    RunStatus.CRASHED: "bold $error",
    RunStatus.CANCELLED: "$warning",
}
SYMBOL = {
    RunStatus.RUNNING: "▶",
    RunStatus.STARTING: "…",
    RunStatus.CANCELLING: "■",
    RunStatus.SUCCEEDED: "✓",
    RunStatus.FAILED: "✗",
    RunStatus.CRASHED: "✗",
    RunStatus.CANCELLED: "■",
}


def status_text(status: str | None, app) -> Text:
    """A status as coloured text; theme variables are resolved from ``app``."""
    if not status:
        return Text("never run", style="dim")
    style = STYLE.get(status, "")
    return Text(f"{SYMBOL.get(status, '·')} {status}", style=resolve(style, app))


def resolve(style: str, app) -> str:
    """``"bold $error"`` -> ``"bold #ff0000"`` with the app's current theme."""
    if "$" not in style:
        return style
    variables = app.theme_variables
    return " ".join(_colour(variables, part[1:]) if part.startswith("$") else part for part in style.split())


def _colour(variables: dict[str, str], name: str) -> str:
    # Some variables are contrast rules ("auto 60%"), not colours Rich can use: dim is the nearest.
    value = variables.get(name, "")
    return "dim" if not value or value.startswith("auto") or " " in value else value


def set_text(static, text: Text) -> None:
    """Update a Static only when its text changed, and without a layout pass when its height stays:
    a relayout of the whole screen every second would be most of the TUI's idle CPU."""
    old = static.content
    if isinstance(old, Text) and old == text:
        return
    same_height = isinstance(old, Text) and old.plain.count("\n") == text.plain.count("\n") and text.no_wrap
    static.update(text, layout=not same_height)
