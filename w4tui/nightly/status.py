"""The schedule as any process sees it (read-only): next night, who holds the scheduler, pause/skip,
the night in progress and its step, the history. The CLI's `w4tui schedule` and the Schedule pane
both show this. Standard library plus the ledger; APScheduler only for the next fire time.
"""

from __future__ import annotations

import time
from datetime import datetime

from core.config import Config
from core.names import LIVE_OUTCOMES, NightOutcome
from core.units import duration
from w4tui.nightly.ledger import Ledger
from w4tui.nightly.lock import SchedulerLock, describe_holder
from w4tui.runs.runner import RunError, Runner


def schedule_status(config: Config, ledger: Ledger, now: datetime | None = None, limit: int = 30) -> dict:
    from w4tui.nightly.scheduler import cron_trigger  # APScheduler off the TUI's and `w4tui status`'s start

    now = now or datetime.now().astimezone()
    holder = SchedulerLock(config.paths.state).holder()
    paused = bool(ledger.flag("paused"))
    skip = ledger.flag("skip")
    upcoming = None
    if config.schedule.enabled:
        trigger = cron_trigger(config)
        upcoming = trigger.get_next_fire_time(None, now)
        if skip and upcoming and float(skip) >= upcoming.timestamp() - 1:
            upcoming = trigger.get_next_fire_time(upcoming, upcoming)  # the one after the skipped night
    runner = Runner(config)
    nights = [_live_view(n, runner) for n in ledger.nights(limit)]
    current = next((n for n in nights if n["outcome"] in LIVE_OUTCOMES), None)
    return {
        "enabled": config.schedule.enabled,
        "time": config.schedule.time,
        "days": config.schedule.days,
        "grace_hours": config.schedule.misfire_grace_hours,
        "paused": paused,
        "skipping": float(skip) if skip else None,
        "next": upcoming.timestamp() if upcoming else None,
        "holder": holder,
        "holder_text": describe_holder(holder),
        "current": current,
        "nights": nights,
    }


def _live_view(night: dict, runner: Runner) -> dict:
    """A night whose driver is gone without recording an end shows as crashed, with its step."""
    night = dict(night)
    steps = night.get("steps") or []
    night["step"] = next((s["step"] for s in reversed(steps) if not s.get("ended")), None)
    if night["outcome"] in LIVE_OUTCOMES and night.get("run"):
        try:
            live = runner.get(night["run"]).live
        except RunError:
            live = False
        if not live and time.time() - (night.get("started") or 0) > 30:
            night["outcome"] = "crashed"
            night["reason"] = night.get("reason") or "the night's driver ended without recording an outcome"
    return night


def describe_next(status: dict, config: Config | None = None) -> str:
    """One line. With ``config`` (the CLI) a hint names the config file in use, since it is pasted into
    another shell; the TUI has its own keys for it."""
    if not status["enabled"]:
        return "schedule disabled ([schedule] enabled = false" + (f" in {config.file})" if config else ")")
    if status["paused"]:
        return f"schedule paused ({config.cli} schedule --resume)" if config else "schedule paused (p resumes)"
    when = datetime.fromtimestamp(status["next"]).strftime("%a %d %b %H:%M") if status["next"] else "none"
    skipped = " (the night before is skipped)" if status["skipping"] else ""
    return f"next night: {when}{skipped}"


def step_durations(night: dict) -> str:
    parts = []
    for step in night.get("steps") or []:
        if step.get("ended") and step.get("started"):
            parts.append(f"{step['step']} {duration(step['ended'] - step['started'])}")
        elif step.get("started"):  # still running, or stopped with the night (cancelled, crashed)
            live = night.get("outcome") in (None, *LIVE_OUTCOMES)
            parts.append(f"{step['step']} {'…' if live else night['outcome']}")
    return ", ".join(parts)


def night_line(night: dict) -> str:
    when = night.get("scheduled_for") or night.get("started") or 0
    data = ""
    if night.get("data_file"):
        samples = f" ({night['samples']} samples)" if night.get("samples") else ""
        data = f" {night['data_file'].rsplit('/', 1)[-1]}{samples}"
    detail = night.get("error") or night.get("reason") or ""
    detail = "" if detail == night["outcome"] else detail  # "cancelled  cancelled"
    failed = f" at {night['failed_step']}" if night.get("failed_step") else ""
    build = f" -> {night['build']}" if night.get("build") and night["outcome"] == NightOutcome.PROMOTED else ""
    return (
        f"{datetime.fromtimestamp(when):%Y-%m-%d %H:%M}  {night['outcome']}{failed}{build}{data}"
        + (f"  [{step_durations(night)}]" if night.get("steps") else "")
        + (f"  {detail}" if detail else "")
    )
