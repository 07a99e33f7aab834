"""A controllable clock for the scheduler tests: time moves only when the test says so.

APScheduler 3 reads the time with ``datetime.now`` in two modules (schedulers/base.py decides what is
due, executors/base.py decides whether a run is within its misfire grace), and the night scheduler
reads it in its own module; ``install`` swaps that name in all three for one that asks this clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.t = start.astimezone()  # aware, in the local zone (the schedule's zone)

    def now(self, tz=None) -> datetime:
        return self.t.astimezone(tz) if tz is not None else self.t.astimezone().replace(tzinfo=None)

    def set(self, when: datetime) -> None:
        self.t = when.astimezone()

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)

    def install(self, monkeypatch) -> FakeClock:
        import apscheduler.executors.base
        import apscheduler.schedulers.base

        import w4tui.nightly.scheduler

        clock = self

        class ClockDatetime(datetime):
            @classmethod
            def now(cls, tz=None):
                return clock.now(tz)

        for module in (apscheduler.schedulers.base, apscheduler.executors.base, w4tui.nightly.scheduler):
            monkeypatch.setattr(module, "datetime", ClockDatetime)
        return self
