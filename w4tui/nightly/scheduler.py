"""The nightly schedule: APScheduler 3 with a persistent SQLite job store (``<state>/scheduler.sqlite``),
``coalesce=True``, ``max_instances=1`` and a misfire grace of hours (``[schedule] misfire_grace_hours``):
a Mac asleep at 21:30 runs the night when it wakes (APScheduler's default 1 s grace would silently
skip it: apscheduler#292). A night beyond the grace is recorded "missed"; scheduled times that a
coalesced run covered are recorded too, so no night disappears without a trace.

Only the holder of the scheduler lock runs it (the daemon, else a TUI). Firing claims the night's key
in the ledger first (a scheduled time runs at most once, whoever holds the lock) and then starts the
night as a detached run, so the holder may quit while it runs.

APScheduler reads the time with ``datetime.now`` (schedulers/base.py, executors/base.py); tests swap
that for a controllable clock, and this module takes its own ``now`` from ``self.now`` likewise.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import time
from datetime import datetime, timedelta

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.triggers.cron import CronTrigger

from core.config import Config, load_config
from core.errors import ActionableError
from core.fsutil import move_aside
from core.names import NightOutcome
from w4tui.nightly.ledger import DAMAGE_CODES, DAMAGED, AlreadyRecorded, Ledger
from w4tui.nightly.lock import SchedulerLock
from w4tui.runs.runner import Run, RunError, Runner

JOB_ID = "nightly"
STORE_FILE = "scheduler.sqlite"
log = logging.getLogger(__name__)


class SchedulerError(ActionableError):
    """The job store cannot be used (read-only, no permission): one line naming it (exit 1)."""

    def __init__(self, path, exc: BaseException) -> None:
        orig = getattr(exc, "orig", None) or exc
        super().__init__(
            f"{path}: cannot use the schedule's job store ({orig})",
            hint=f"make {path.parent} writable, or remove the file: it is made anew from the config's [schedule]",
        )


def cron_trigger(config: Config) -> CronTrigger:
    hour, minute = config.schedule.time.split(":")
    return CronTrigger(day_of_week=config.schedule.days, hour=int(hour), minute=int(minute))


def next_night(config: Config, now: datetime) -> datetime | None:
    return cron_trigger(config).get_next_fire_time(None, now) if config.schedule.enabled else None


def night_key(when: datetime) -> str:
    return "scheduled-" + when.strftime("%Y%m%d-%H%M")


def now_key() -> str:
    """The ledger key of a night started by hand. Unique even within one second: two quick nights
    (the first one stopped at a bad line) shared a key, and the second overwrote the first's record."""
    return f"now-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def start_night(config: Config, key: str) -> Run:
    """Start one night as a detached run (its driver chains the steps); refused while one is live."""
    runner = Runner(config)
    live = next((r for r in runner.runs() if r.stage == "nightly" and r.live), None)
    if live is not None:
        raise RunError(f"a night is already running: run {live.id} (pid {live.pid})")
    command = [sys.executable, "-m", "w4tui.nightly.night", "--config", str(config.file), "--night", key]
    return runner.start_command("nightly", command)


class _Scheduler(BackgroundScheduler):
    """Waits at most ``poll_s`` at a time: a monotonic wait computed before a Mac sleeps does not count
    the sleep, so an uncapped wait would run the night hours after the wake instead of at it."""

    poll_s = 60.0

    def _main_loop(self):
        wait = self.poll_s
        while self.state != STATE_STOPPED:
            self._event.wait(self.poll_s if wait is None else min(wait, self.poll_s))
            self._event.clear()
            wait = self._process_jobs()


class _OnItsHolder(ThreadPoolExecutor):
    """Runs the stored nightly job on the NightScheduler that made this executor. The job store keeps the
    job's function as text (``fire``, importable by any process); the job runs on its holder, handed in
    here, so nothing global connects a job to the scheduler that fires it."""

    def __init__(self, holder: NightScheduler) -> None:
        super().__init__(max_workers=1)
        self.holder = holder

    def _do_submit_job(self, job, run_times):
        if job.id == JOB_ID:  # in memory only: the store still says fire (job.func_ref)
            job.func = lambda **_: self.holder.fire()
        super()._do_submit_job(job, run_times)


class NightScheduler:
    """The schedule's holder: one per process that runs it, created and shut down by its owner (the TUI's
    app, or the daemon), which hands it to what shows it (the Schedule pane)."""

    def __init__(self, config: Config, kind: str = "tui", poll_s: float = 60.0, starter=start_night) -> None:
        self.config, self.kind, self.starter = config, kind, starter
        self.lock = SchedulerLock(config.paths.state)
        self.ledger = Ledger.open(config)
        # What was repaired on the way (a damaged ledger or job store), for the holder to say once.
        self.repaired: list[str] = [self.ledger.repaired] if self.ledger.repaired else []
        self.grace_s = int(config.schedule.misfire_grace_hours * 3600)
        self.poll_s = poll_s
        self.sched = self._scheduler()

    def _scheduler(self) -> _Scheduler:
        sched = _Scheduler(
            jobstores={"default": _store(self.config)},
            executors={"default": _OnItsHolder(self)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": self.grace_s},
        )
        sched.poll_s = self.poll_s
        sched.add_listener(self._missed, EVENT_JOB_MISSED)
        return sched

    def now(self) -> datetime:
        return datetime.now(self.sched.timezone)

    # -- holding ---------------------------------------------------------------------------
    def start(self) -> bool:
        """Take the lock and run the schedule; False (read-only) when another process holds it."""
        if self.sched.running:
            return True
        if not self.lock.acquire(self.kind):
            return False
        try:
            resume_from = self._start_store()
            self.ensure_job(resume_from)
        except BaseException:
            self.shutdown()
            raise
        self.sched.resume()
        return True

    def _start_store(self) -> datetime | None:
        """Start paused on the job store (nothing fires before the job is checked). A damaged store is moved
        aside and made anew; it then returns the time from which the job resumes: the first scheduled time
        after the last night the ledger knows, so a night due meanwhile still runs (or is recorded missed)."""
        from sqlalchemy.exc import DatabaseError, SQLAlchemyError  # with the job store, as in _store

        path = self.config.paths.state / STORE_FILE
        try:
            self.sched.start(paused=True)
            return None
        except DatabaseError as exc:
            if getattr(exc.orig, "sqlite_errorname", None) not in DAMAGE_CODES:
                raise SchedulerError(path, exc) from None
            reason = str(exc.orig)
        except SQLAlchemyError as exc:
            raise SchedulerError(path, exc) from None
        aside = move_aside(path, DAMAGED)
        self.sched = self._scheduler()
        self.sched.start(paused=True)
        s = self.config.schedule
        self.repaired.append(
            f"{path} was damaged ({reason}): moved aside to {aside.name}; the schedule was made anew from "
            f"{self.config.file} [schedule] ({s.days} at {s.time})"
        )
        since = max(self.ledger.last_scheduled() or 0, float(self.ledger.flag("schedule_since") or 0))
        return datetime.fromtimestamp(since, self.sched.timezone) + timedelta(seconds=1) if since else None

    def shutdown(self) -> None:
        if self.sched.running:
            self.sched.shutdown(wait=False)
        self.lock.release()

    def ensure_job(self, resume_from: datetime | None = None) -> None:
        """Make the stored job match the config. An unchanged job keeps its stored next run time, so a
        night due while no process held the scheduler still fires (or is recorded missed) now; a job made
        anew for a lost store (``resume_from``) takes its next run time from the ledger's nights instead."""
        job = self.sched.get_job(JOB_ID)
        if not self.config.schedule.enabled:
            if job is not None:
                self.sched.remove_job(JOB_ID)
            return
        trigger = cron_trigger(self.config)
        kwargs = {"config_file": str(self.config.file)}
        if job is None or str(job.trigger) != str(trigger) or job.kwargs != kwargs:
            when = {"next_run_time": trigger.get_next_fire_time(None, resume_from)} if resume_from else {}
            self.sched.add_job(
                fire, trigger=trigger, id=JOB_ID, name="w4tui nightly", kwargs=kwargs, replace_existing=True, **when
            )
            if resume_from is None:
                self.ledger.set_flag("schedule_since", str(self.now().timestamp()))
        elif job.misfire_grace_time != self.grace_s:
            self.sched.modify_job(JOB_ID, misfire_grace_time=self.grace_s)

    def wakeup(self) -> None:
        self.sched.wakeup()

    # -- firing ------------------------------------------------------------------------------
    def fire(self) -> str | None:
        """The job: record the night due now and start it. Returns the night key (None: not run)."""
        try:
            return self._fire()
        except ActionableError as exc:  # a ledger it cannot write: one line in the holder's log, no traceback
            log.error("the night due now was not started: %s (%s)", exc.message, exc.hint)
            return None

    def _fire(self) -> str | None:
        now = self.now()
        when = _last_fire(cron_trigger(self.config), now)
        self._record_gaps(when, f"the night of {when:%a %d %b %H:%M} ran instead (coalesced)")
        if self.ledger.flag("paused"):
            return None
        key = night_key(when)
        skip = self.ledger.flag("skip")
        try:
            if skip and float(skip) >= when.timestamp() - 1:
                self.ledger.set_flag("skip", None)
                self.ledger.claim_night(
                    key,
                    scheduled_for=when.timestamp(),
                    trigger="schedule",
                    outcome=NightOutcome.SKIPPED,
                    reason="skipped by request",
                    ended=now.timestamp(),
                )
                return None
            self.ledger.claim_night(
                key, scheduled_for=when.timestamp(), trigger="schedule", outcome=NightOutcome.STARTING
            )
        except AlreadyRecorded:
            return None  # another holder ran this scheduled time already
        try:
            run = self.starter(self.config, key)
        except RunError as exc:
            self.ledger.update_night(key, outcome=NightOutcome.SKIPPED, reason=str(exc), ended=now.timestamp())
            return None
        self.ledger.update_night(key, run=run.id)
        log.info("night %s (due %s) started: run %s", key, f"{when:%H:%M}", run.id)
        return key

    def _missed(self, event: JobExecutionEvent) -> None:
        when = event.scheduled_run_time
        late = self.now() - when
        self._record_gaps(when, "the machine was asleep or off")
        hours = self.grace_s / 3600
        with contextlib.suppress(AlreadyRecorded):
            self.ledger.claim_night(
                night_key(when),
                scheduled_for=when.timestamp(),
                trigger="schedule",
                outcome=NightOutcome.MISSED,
                ended=self.now().timestamp(),
                reason=f"missed: {_hours(late)} late, beyond the {hours:g} h grace (asleep or off at the time)",
            )

    def _record_gaps(self, before: datetime, reason: str) -> None:
        """Scheduled times since the last recorded one that never fired on their own (asleep, off)."""
        since = max(self.ledger.last_scheduled() or 0, float(self.ledger.flag("schedule_since") or 0))
        if not since or self.ledger.flag("paused"):
            return
        trigger = cron_trigger(self.config)
        t = trigger.get_next_fire_time(None, datetime.fromtimestamp(since, before.tzinfo) + timedelta(seconds=1))
        for _ in range(400):
            if t is None or t >= before:
                return
            with contextlib.suppress(AlreadyRecorded):
                self.ledger.claim_night(
                    night_key(t),
                    scheduled_for=t.timestamp(),
                    trigger="schedule",
                    outcome=NightOutcome.MISSED,
                    reason=f"missed: {reason}",
                    ended=self.now().timestamp(),
                )
            t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))


def fire(config_file: str) -> str | None:
    """The stored job's function (a textual reference in the job store, so it must stay importable). Its
    holder's executor runs the job on the holder instead; this runs it only for a store some other
    scheduler restored."""
    return NightScheduler(load_config(config_file)).fire()


def _last_fire(trigger: CronTrigger, now: datetime) -> datetime:
    """The newest scheduled time at or before ``now`` (the one APScheduler coalesced onto)."""
    t = trigger.get_next_fire_time(None, now - timedelta(days=8))
    last = t
    while t is not None and t <= now:
        last, t = t, trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return last


def _store(config: Config):
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # SQLAlchemy (~300 ms): only to hold

    config.paths.state.mkdir(parents=True, exist_ok=True)
    return SQLAlchemyJobStore(url=f"sqlite:///{config.paths.state / STORE_FILE}")


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"
