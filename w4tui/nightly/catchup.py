"""Settling what a killed night left, before the next one plans (and after a step dies mid-promotion).

A night killed with kill -9 (or a power loss) records nothing more: its ledger record still says
running, its build lacks the fields of the steps that ended after it died, and its verify may have
died halfway through moving ``latest`` (the promotion journal, core/ollama/promote.py). The next night
first finishes or undoes that promotion, as the journal promises, and records the outcome (the build is
promoted only if the promotion finished: its data counts as served only then); then it reads each dead
night's step runs the way ``ledger.rebuild`` does, and records how the night ended.

A night is dead when its own run is not live and none of its steps is: a step that outlived its driver
(the runs are detached) is left to finish, and settled by a later night.
"""

from __future__ import annotations

import time

from core.config import Config
from core.names import NightOutcome
from core.ollama import client as oc
from core.ollama import promote as op
from w4tui.nightly.ledger import Ledger
from w4tui.nightly.record import build_fields
from w4tui.report import last_move
from w4tui.runs.runner import RunError, Runner

UNCLAIMED_S = 600  # a night claimed but never given a run: its holder died between the two (it takes seconds)


def settle(config: Config, ledger: Ledger, exclude: str | None = None) -> list[str]:
    """Settle an interrupted promotion, then the dead nights (all but ``exclude``, the one asking).
    Returns one line per thing done, for the night's log."""
    lines = settle_promotion(config, ledger)
    runner = Runner(config)
    moved = last_move(config)
    settled = [settle_night(ledger, runner, night, moved) for night in ledger.live_nights() if night["key"] != exclude]
    return lines + [line for line in settled if line]


def settle_promotion(config: Config, ledger: Ledger) -> list[str]:
    """Finish or undo an interrupted promotion (op.recover) and mark its build promoted when it finished."""
    journal = op.pending(config)
    if journal is None:
        return []
    try:
        done = op.recover(config)
        finished = done is not None and op.works(config, oc.tag(config, "latest"), journal["latest_after"])
    except oc.OllamaError as exc:
        return [f"warning: an interrupted {journal['action']} of {journal['build']} is not settled yet: {exc.message}"]
    if done is None:
        return []
    build = ledger.build(journal["build"].rsplit(":", 1)[-1])
    if journal["action"] == "promotion" and build is not None and finished:
        ledger.upsert_build(build["build"], promoted=1, promoted_at=time.time(), verify="passed")
    return [done]


def settle_night(ledger: Ledger, runner: Runner, night: dict, moved: dict | None = None) -> str | None:
    """Record how a dead night ended, from its step runs; None while it (or one of its steps) is live.
    ``moved``: the last completed move of latest (ollama-latest.json); a verify killed after the promotion
    but before its report still promoted its build, and that move says so."""
    if _live(runner, night):
        return None
    steps = [dict(step) for step in night.get("steps") or []]
    fields: dict = {"night": night["key"]}
    for step in steps:
        try:
            run = runner.get(step["run"])
        except (RunError, KeyError):
            continue  # a run dir removed by hand: the build keeps what the other runs say
        fields = build_fields(run, fields)
        step.update(ended=run.ended, status=run.status)
    build = night.get("build")
    if build and (existing := ledger.build(build)):
        promoted_by_move = (
            moved is not None
            and moved.get("action") == "promoted"
            and str(moved.get("builds") or "").rsplit(":", 1)[-1] == build
            and moved["time"] >= (night.get("started") or 0)
        )
        if (existing.get("promoted") or promoted_by_move) and not fields.get("promoted"):
            # a promotion finished (by the journal, or before the verify died): its verify wrote no report
            fields = {k: v for k, v in fields.items() if k not in ("promoted", "promoted_at", "verify", "verify_error")}
            if promoted_by_move and not existing.get("promoted"):
                fields.update(promoted=1, promoted_at=moved["time"], verify="passed")
        ledger.upsert_build(build, **fields)
    last = steps[-1] if steps else None
    ended = max([s["ended"] for s in steps if s.get("ended")] or [night.get("started") or time.time()])
    if build and (ledger.build(build) or {}).get("promoted"):
        ledger.update_night(
            night["key"],
            outcome=NightOutcome.PROMOTED,
            steps=steps,
            ended=ended,
            reason="its driver died; its build was promoted (settled from its runs and the promotion journal)",
        )
        return f"the night {night['key']} had died; its build {build} was promoted: recorded promoted"
    where = f"during {last['step']} (run {last['run']}, {last.get('status')})" if last else "before its first step"
    ledger.update_night(
        night["key"],
        outcome=NightOutcome.CRASHED,
        steps=steps,
        ended=ended,
        failed_step=last["step"] if last else None,
        error=f"the night's driver died {where} (killed, out of memory or power loss)",
    )
    return f"the night {night['key']} had died {where}: recorded crashed"


def _live(runner: Runner, night: dict) -> bool:
    if not night.get("run"):  # claimed, not yet started: its holder is starting it now, or died doing so
        return time.time() - (night.get("started") or night.get("scheduled_for") or 0) < UNCLAIMED_S
    return any(_run_live(runner, run) for run in [night["run"], *(s.get("run") for s in night.get("steps") or [])])


def _run_live(runner: Runner, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        return runner.get(run_id).live
    except RunError:
        return False
