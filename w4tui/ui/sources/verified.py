"""Which Ollama builds passed verification, from the ``verified`` artifact events of the verify runs: the
Ollama pane marks them and promotes (or rolls back to) only those. Called from a worker thread."""

from __future__ import annotations

from collections.abc import Sequence

from core.events import read_events
from core.names import EventKind
from w4tui.ui.sources.runs import RunInfo


class VerifiedBuilds:
    def __init__(self) -> None:
        self._events: dict[str, list[dict]] = {}  # finished verify run id -> its verified events

    def results(self, runs: Sequence[RunInfo]) -> dict[str, bool]:
        """Model name -> the newest verify result for it (True: passed)."""
        out: dict[str, bool] = {}
        for run in sorted((r for r in runs if r.stage == "verify"), key=lambda r: r.started):
            events = self._events.get(run.id)
            if events is None:
                events = [
                    e
                    for e in read_events(run.events_path)
                    if e.get("kind") == EventKind.ARTIFACT and e.get("type") == "verified"
                ]
                if not run.live:  # a finished run's events never change
                    self._events[run.id] = events
            for e in events:
                out[str(e.get("path"))] = bool(e.get("passed"))
        return out
