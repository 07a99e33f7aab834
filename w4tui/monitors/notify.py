"""Notifications when a run or a night ends: a macOS Notification Center message (``osascript``;
elsewhere nothing) and, when ``[notify] url`` is set, one POST to it (an ntfy topic, a webhook).

The supervisor calls ``run_ended`` once, after run.json holds the final status, so a run is never held
up by a slow server and every run end is sent once, whether or not a TUI is open. The TUI adds the
terminal bell and a toast itself. Standard library only.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time

from core.config import ENV_CONFIG, ConfigError, load_config
from core.names import RunStatus
from core.units import duration

log = logging.getLogger(__name__)

POST_TIMEOUT_S = 5.0


def describe(record: dict, error: str | None = None) -> tuple[str, str]:
    """(title, body) for a finished run's record."""
    status = record.get("status", "ended")
    took = (record.get("ended") or time.time()) - (record.get("started") or record.get("created") or time.time())
    title = f"w4tui: {record.get('stage', 'run')} {status}"
    body = f"run {record.get('id', '?')} after {duration(took)}"
    if error and status in (RunStatus.FAILED, RunStatus.CRASHED):
        body += f": {error}"
    return title, body


def send(title: str, body: str, url: str = "", desktop: bool = True, system: str | None = None) -> list[str]:
    """Send by every configured means; never raises. Returns what was sent (for the log and tests)."""
    sent = []
    if desktop and (system or platform.system()) == "Darwin":
        script = f"display notification {_applescript(body)} with title {_applescript(title)}"
        try:  # not waited for: Notification Center may take a moment, the caller must not
            subprocess.Popen(
                ["osascript", "-e", script],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            sent.append("osascript")
        except OSError as exc:
            log.warning("osascript: %s", exc)
    if url:
        import urllib.request  # not at import: the TUI imports this module for EndWatch, early

        request = urllib.request.Request(
            url,
            data=body.encode("utf-8"),
            method="POST",
            headers={"Title": title, "Content-Type": "text/plain; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:
                response.read(1024)
            sent.append("url")
        except Exception as exc:  # down, slow, refused: a notification is never worth a traceback
            log.warning("notify url %s: %s", url, exc)
    return sent


def run_ended(record: dict, error: str | None = None) -> list[str]:
    """From the supervisor, once the run's final status is recorded: send by the run's config."""
    try:
        config = load_config((record.get("env") or {}).get(ENV_CONFIG))
    except ConfigError as exc:
        log.warning("notify: %s", exc)
        return []
    title, body = describe(record, error)
    return send(title, body, config.notify.url, config.notify.desktop)


def _applescript(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EndWatch:
    """For the TUI's bell and toast: the runs this process saw live that have ended since, each once.
    Runs that had ended before the TUI started are not announced."""

    def __init__(self) -> None:
        self._live: set[str] = set()

    def ended(self, runs) -> list:
        """``runs``: objects with ``id`` and ``live`` (RunInfo)."""
        out = [run for run in runs if run.id in self._live and not run.live]
        self._live = {run.id for run in runs if run.live}
        return out
