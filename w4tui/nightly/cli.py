"""`w4tui schedule`, `w4tui nightly --now | --dry-run`, `w4tui daemon [--install-launchd]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime
from typing import TextIO

from core.config import Config, ConfigError, load_config
from core.errors import EXIT_BY_OUTCOME, EXIT_CANCELLED
from core.events import EventReader
from core.names import EventKind, NightOutcome, RunStatus
from core.ollama import promote as op
from w4tui.nightly.install import install
from w4tui.nightly.ledger import Ledger
from w4tui.nightly.lock import describe_holder
from w4tui.nightly.plan import BadData, describe, make_plan, ollama_problem
from w4tui.nightly.status import describe_next, night_line, schedule_status
from w4tui.runs.follow import follow
from w4tui.runs.runner import Run, Runner


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    sched = sub.add_parser("schedule", parents=[common], help="the nightly schedule: next night, holder, history")
    action = sched.add_mutually_exclusive_group()
    action.add_argument("--pause", action="store_true", help="stop scheduled nights until --resume")
    action.add_argument("--resume", action="store_true", help="let scheduled nights run again")
    action.add_argument("--skip-next", action="store_true", help="skip the next scheduled night only")
    sched.add_argument("--json", action="store_true", help="machine-readable output")
    night = sub.add_parser("nightly", parents=[common], help="run tonight's build now, or show what it would do")
    what = night.add_mutually_exclusive_group(required=True)
    what.add_argument("--now", action="store_true", help="run one night now, following its progress")
    what.add_argument("--dry-run", action="store_true", help="print what tonight would do; change nothing")
    daemon = sub.add_parser("daemon", parents=[common], help="run the nightly scheduler headless")
    daemon.add_argument(
        "--install-launchd",
        action="store_true",
        help="write a LaunchAgent that starts the daemon at login (Linux: print a systemd unit)",
    )
    daemon.add_argument(
        "--poll",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between checks (taking over a free lock, config changes; default 30)",
    )


def open_ledger(config: Config) -> Ledger:
    """The ledger, saying in one line on stderr when a damaged one was moved aside and rebuilt."""
    ledger = Ledger.open(config)
    if ledger.repaired:
        print(f"warning: {ledger.repaired}", file=sys.stderr, flush=True)
    return ledger


def cmd_schedule(config: Config, args: argparse.Namespace) -> int:
    ledger = open_ledger(config)
    if args.pause or args.resume or args.skip_next:
        print(set_control(config, ledger, "pause" if args.pause else "resume" if args.resume else "skip"))
        return 0
    status = schedule_status(config, ledger)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(
        f"{describe_next(status, config)}  ({config.schedule.days} at {config.schedule.time}, "
        f"misfire grace {config.schedule.misfire_grace_hours:g} h)"
    )
    print(
        f"scheduler: {status['holder_text']}"
        # Holding a disabled schedule runs nothing: the hint is only for an enabled one.
        + ("" if status["holder"] or not status["enabled"] else f" (start `{config.cli} daemon`, or open the TUI)")
    )
    if status["current"]:
        step = status["current"].get("step") or "starting"
        print(f"in progress: {status['current']['key']} at {step} (run {status['current'].get('run')})")
    print("nights:" if status["nights"] else "no nights yet")
    for night in status["nights"][:10]:
        print("  " + night_line(night))
    return 0


def set_control(config: Config, ledger: Ledger, what: str) -> str:
    """Pause, resume or skip: flags in the ledger that the scheduler's holder reads when a night is due."""
    from w4tui.nightly.scheduler import next_night  # APScheduler only for the commands that schedule

    # (a disabled schedule runs no nights whatever the flags say: say so, and where it is switched on)
    off = "" if config.schedule.enabled else f"; the schedule itself is disabled ([schedule] enabled in {config.file})"
    if what == "pause":
        ledger.set_flag("paused", str(time.time()))
        return f"scheduled nights paused ({config.cli} schedule --resume to resume){off}"
    if what == "resume":
        ledger.set_flag("paused", None)
        ledger.set_flag("schedule_since", str(time.time()))  # paused nights are not "missed"
        return f"scheduled nights resumed{off}"
    upcoming = next_night(config, datetime.now().astimezone())
    if upcoming is None:
        return f"nothing to skip: the schedule is disabled ([schedule] enabled = false in {config.file})"
    ledger.set_flag("skip", str(upcoming.timestamp()))
    return f"the night of {upcoming:%a %d %b %H:%M} will be skipped"


def cmd_nightly(config: Config, args: argparse.Namespace) -> int:
    from w4tui.nightly.scheduler import now_key, start_night  # APScheduler: as above

    ledger = open_ledger(config)
    if args.dry_run:
        try:
            plan = make_plan(config, ledger)
        except BadData as exc:
            print(f"tonight would stop before training: {exc}")
            return 1
        print("\n".join(describe(plan, config)))
        journal = op.pending(config)  # settled by the night first (catchup.py): it may change the plan
        if journal:
            print(f"note: the night first finishes or undoes the interrupted {journal['action']} of {journal['build']}")
        problem = ollama_problem(config) if plan.steps else None
        if problem:
            print(f"warning: {problem}")
        return 1 if plan.steps and plan.disk_free < plan.disk_needed else 0
    ledger.check_writable()  # a read-only ledger: one line now, not a night that dies at its first record
    key = now_key()
    runner = Runner(config)
    run = start_night(config, key)
    print(f"night {key} started: run {run.id} (pid {run.pid}); it keeps running if you press Ctrl-C", flush=True)
    try:
        follow_night(runner, run)
    except KeyboardInterrupt:
        print(
            f"\ndetached; the night keeps running. See it: {config.cli} schedule; stop it: {config.cli} cancel {run.id}"
        )
        return EXIT_CANCELLED
    night = ledger.night(key) or _unrecorded(runner.get(run.id))
    if runner.get(run.id).status == RunStatus.CRASHED and night["outcome"] == NightOutcome.RUNNING:
        night["outcome"] = "crashed"
    print(final_line(night))
    return EXIT_BY_OUTCOME.get(night["outcome"], 1)


def _unrecorded(run: Run) -> dict:
    """A night that ended before its first record: its run's own error says why (a ledger it could not
    write, a config it could not read), else it crashed."""
    error = run.error()
    if error and error.get("message"):
        hint = f" ({error['hint']})" if error.get("hint") else ""
        return {"outcome": NightOutcome.FAILED, "error": error["message"] + hint}
    return {"outcome": NightOutcome.CRASHED, "error": "the night's driver recorded nothing"}


def final_line(night: dict) -> str:
    """How the night ended, in one line (a reason that only repeats the outcome is left out)."""
    why = night.get("error") or night.get("reason")
    return (
        f"night {night['outcome']}"
        + (f" at {night['failed_step']}" if night.get("failed_step") else "")
        + (f": {why}" if why and why != night["outcome"] else "")
        + (f" (build {night['build']})" if night.get("build") else "")
    )


def follow_night(runner: Runner, run: Run, out: TextIO = sys.stdout, poll_s: float = 0.3) -> None:
    """The night's own lines, and each step's progress while it runs (the steps are runs of their own)."""
    reader = EventReader(run.events_path)
    while True:
        live = runner.get(run.id).live
        for event in reader.read():
            if event.get("kind") == EventKind.PROGRESS and event.get("step_run"):
                print(f"== {event.get('message')}", file=out, flush=True)
                follow(runner, runner.get(event["step_run"]), out)
            elif event.get("kind") == EventKind.LOG:
                warning = "warning: " if event.get("level") == "warning" else ""
                print(f"{warning}{event.get('message')}", file=out, flush=True)
        if not live:
            return
        time.sleep(poll_s)


def cmd_daemon(config: Config, args: argparse.Namespace) -> int:
    from w4tui.nightly.scheduler import NightScheduler, next_night  # APScheduler: as above

    if args.install_launchd:
        print("\n".join(install(config)))
        return 0
    # APScheduler's own lines (a night run, or missed by how much) belong in the daemon's log.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    sched, said = NightScheduler(config, kind="daemon", poll_s=args.poll), ""
    print(f"w4tui daemon pid {os.getpid()} ({config.file})", flush=True)
    while not stop.is_set():
        if not sched.sched.running and sched.start():
            for line in sched.repaired:  # a damaged ledger or job store, moved aside and made anew
                print(f"warning: {line}", flush=True)
            sched.repaired = []
            upcoming = next_night(config, sched.now())
            said = (
                f"holding the scheduler; next night: {upcoming:%a %d %b %H:%M}"
                if upcoming
                else "holding the scheduler; the schedule is disabled ([schedule] enabled = false)"
            )
            print(said, flush=True)
        elif not sched.sched.running:
            text = f"read-only: the scheduler is {describe_holder(sched.lock.holder())}; waiting to take over"
            if text != said:
                print(text, flush=True)
                said = text
        else:
            sched = _reload(sched, config, args)
            config = sched.config
        stop.wait(args.poll)
    sched.shutdown()
    print("w4tui daemon stopped; a night in progress keeps running", flush=True)
    return 0


def _reload(sched, config: Config, args: argparse.Namespace):
    """A changed [schedule] applies without a restart."""
    try:
        fresh = load_config(config.file)
    except ConfigError as exc:
        print(f"config not reloaded: {exc}", file=sys.stderr, flush=True)
        return sched
    if fresh.schedule != config.schedule:
        sched.config = fresh
        sched.grace_s = int(fresh.schedule.misfire_grace_hours * 3600)
        sched.ensure_job()
        print(f"schedule changed: {fresh.schedule.days} at {fresh.schedule.time}", flush=True)
    return sched


COMMANDS = {"schedule": cmd_schedule, "nightly": cmd_nightly, "daemon": cmd_daemon}
