"""The TUI's hold on the nightly schedule. The app owns one (as Toolong's App owns its watcher), hands it
to the Schedule pane, and shuts it down when it quits; the pane asks it each round to take the schedule
(enabled, and no daemon holds it: it takes over from a holder that died) and shows whether it holds it.
"""

from __future__ import annotations

import threading

from core.config import Config
from core.errors import ActionableError


class ScheduleHolder:
    def __init__(self, kind: str = "tui") -> None:
        self.kind = kind
        self.scheduler = None  # a NightScheduler once the schedule was enabled
        self.notes: list[str] = []  # what holding it repaired or could not do, one line each, for the pane
        self._lock = threading.Lock()  # the pane's poll thread and the app's shutdown

    def try_hold(self, config: Config) -> bool:
        """In a worker thread: hold the schedule when it is enabled and nobody else does; True while held."""
        with self._lock:
            if config.schedule.enabled and self.scheduler is None:
                # Function-level: APScheduler and its SQLAlchemy job store stay off the TUI's start.
                from w4tui.nightly.scheduler import NightScheduler

                self.scheduler = NightScheduler(config, kind=self.kind)
            if self.scheduler is not None and not self.scheduler.sched.running:
                try:
                    self.scheduler.start()  # False while a daemon holds it: tried again next round
                except ActionableError as exc:  # a job store it cannot write: said in the pane, retried
                    self.notes = [f"{exc.message} ({exc.hint})"]
                else:
                    self.notes = list(self.scheduler.repaired)
            return self.held

    @property
    def held(self) -> bool:
        return self.scheduler is not None and self.scheduler.sched.running

    def shutdown(self) -> None:
        with self._lock:
            if self.scheduler is not None:
                self.scheduler.shutdown()
                self.scheduler = None
