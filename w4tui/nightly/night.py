"""One night, as its own detached run (``python -m w4tui.nightly.night``): find the data, train from the
last promoted adapter, convert with the adapter merged and quantized on the fly (an F16 and a quantize step only with [nightly] keep_f16), deploy a nightly tag, verify
with --promote; then retention. Each step is a normal detached run, so closing the TUI or the SSH
session never stops the night; this process only chains them, records the night in the ledger and
reports where it is in its own events. Cancelling it cancels the step it waits for.

A failed step ends the night: ``latest`` is untouched (only verify's --promote moves it, on a pass).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.config import Config, load_config
from core.errors import StageError
from core.events import EventWriter
from core.names import NightOutcome, RunStatus
from core.program import run_program
from core.units import size
from w4tui.nightly import awake, catchup, retention
from w4tui.nightly.ledger import AlreadyRecorded, Ledger
from w4tui.nightly.plan import BadData, make_plan, ollama_problem
from w4tui.nightly.record import build_fields
from w4tui.runs.pipeline import Step, StepEvent, run_pipeline, succeeded
from w4tui.runs.runner import Run, RunError, Runner

CANCEL_WAIT_S = 60.0  # a cancelled training checkpoints first: the step in flight gets this long to end


class StepFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


def run_night(config: Config, key: str, events: EventWriter, run_id: str | None = None) -> dict:
    """Run the night recorded (or to record) as ``key``; returns the ledger's night record."""
    ledger = Ledger.open(config)
    if ledger.repaired:  # a damaged ledger was moved aside and rebuilt: the night goes on, and says so
        _say(events, ledger.repaired, warning=True)
    if ledger.night(key) is None:
        ledger.claim_night(key, trigger="now", run=run_id)
    else:
        ledger.update_night(key, run=run_id, started=time.time(), outcome=NightOutcome.RUNNING)
    runner = Runner(config)
    current: list[Run] = []
    try:
        for line in catchup.settle(config, ledger, exclude=key):  # what a killed night left, first
            _say(events, line)
        night = _chain(config, key, ledger, runner, events, current)
    except KeyboardInterrupt:
        night = _cancelled(ledger, runner, key, current)
    except StepFailed as exc:
        night = ledger.update_night(
            key, outcome=NightOutcome.FAILED, failed_step=exc.step, error=str(exc), ended=time.time()
        )
        if exc.step == "verify":  # it may have died halfway through moving latest: settled now, not next night
            for line in catchup.settle_promotion(config, ledger):
                _say(events, line)
    build = night.get("build")
    # After every night, also a skipped one: what a dead night left is reclaimed (retention.py).
    for line in retention.apply(config, ledger, build if build and ledger.build(build) else None):
        _say(events, line)
    return ledger.night(key)


def _say(events: EventWriter, line: str, warning: bool = False) -> None:
    """A line for the night's log and for whoever follows it (`w4tui nightly --now`)."""
    warning = warning or line.startswith("warning: ")
    line = line.removeprefix("warning: ")
    events.log(line, level="warning" if warning else "info")
    print(f"warning: {line}" if warning else line, flush=True)


def _cancelled(ledger: Ledger, runner: Runner, key: str, current: list[Run]) -> dict:
    """Ctrl-C or SIGTERM: the step in flight is cancelled too, and the night waits (a while) to record
    how it ended; a second signal stops the wait, not the cancel."""
    night = ledger.update_night(key, outcome=NightOutcome.CANCELLED, reason="cancelled", ended=time.time())
    steps = night.get("steps") or []
    for run in current:
        if runner.get(run.id).live:
            runner.cancel(run.id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    try:
        while any(runner.get(run.id).live for run in current) and time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    for step in steps:
        for run in current:
            if step.get("run") == run.id:
                done = runner.get(run.id)
                step.update(ended=done.ended, status=done.status)
    return ledger.update_night(key, steps=steps)


def _chain(config: Config, key: str, ledger: Ledger, runner: Runner, events: EventWriter, current: list) -> dict:
    try:
        plan = make_plan(config, ledger, build=f"nightly-{time.strftime('%Y%m%d-%H%M%S')}")
    except BadData as exc:
        if exc.path:  # the history shows which file stopped the night
            ledger.update_night(key, data_file=str(exc.path))
        raise StepFailed("data", str(exc)) from None
    ledger.update_night(
        key,
        data_file=str(plan.data_file) if plan.data_file else None,
        data_sha256=plan.data_sha256,
        samples=plan.samples,
        parent_adapter=plan.parent_adapter,
    )
    if plan.skip:  # the reason goes in the done event: `nightly --now` prints it once, in its last line
        print(f"skipped: {plan.skip}", flush=True)
        return ledger.update_night(key, outcome=NightOutcome.SKIPPED, reason=plan.skip, ended=time.time())
    if plan.disk_free < plan.disk_needed:
        raise StepFailed(
            "disk",
            f"{config.paths.outputs}: {size(plan.disk_free)} free, a night needs "
            f"{size(plan.disk_needed)}; free {size(plan.disk_needed - plan.disk_free)}",
        )
    problem = ollama_problem(config)
    if problem:
        _say(events, problem, warning=True)
    origin = plan.parent_adapter or "the base model (first night: no promoted adapter yet)"
    events.log(f"{plan.data_file.name}: {plan.samples} samples; training from {origin}")
    print(f"data {plan.data_file} ({plan.samples} samples); parent: {origin}", flush=True)
    ledger.upsert_build(plan.build, night=key)
    ledger.update_night(key, build=plan.build, reason=None if plan.parent_adapter else "first night: from the base")
    steps: list[dict] = []
    fields: dict = {"night": key}

    def on_event(event: StepEvent) -> None:
        nonlocal fields
        run = runner.get(event.run_id)
        if event.kind == "started":
            current[:] = [run]
            steps.append({"step": event.stage, "run": run.id, "started": run.started})
            events.progress(
                event.index,
                event.total,
                "steps",
                message=f"{event.stage}: run {run.id}",
                step=event.stage,
                step_run=run.id,
            )
            print(f"== {event.stage}: run {run.id}", flush=True)
        else:
            steps[-1].update(ended=run.ended, status=run.status)
            if event.stage == "train" and event.artifact:  # the history shows the eval losses night by night
                steps[-1].update(train_losses(Path(event.artifact)))
            fields = build_fields(run, fields)
            ledger.upsert_build(plan.build, **fields)
        ledger.update_night(key, steps=steps)

    # Explicit arguments per step (args=): the night names every input and output itself.
    chain = [Step(stage, args=args) for stage, args in plan.steps]
    try:
        ended = run_pipeline(runner, chain, on_event=on_event, build=plan.build)
    except RunError as exc:  # a step refused at start (pre-flight, a live run writing the same output)
        raise StepFailed(chain[len(steps)].stage, str(exc)) from None
    if not succeeded(ended, chain):
        last = ended[-1]
        raise StepFailed(last.stage, last.error or _error_line(runner.get(last.run_id)))
    events.progress(len(chain), len(chain), "steps", message="promoted")
    return ledger.update_night(key, outcome=NightOutcome.PROMOTED, ended=time.time())


def train_losses(adapter: Path) -> dict:
    """The eval losses a night's training recorded: on its own held-out slice, and on a held-out slice of
    the main dataset (the forgetting signal: rising night after night means narrow data is wearing the
    model down)."""
    try:
        record = json.loads((adapter / "training_run.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: record[k] for k in ("eval_loss", "main_eval_loss") if isinstance(record.get(k), int | float)}


def _error_line(run: Run) -> str:
    error = run.error()
    if error and error.get("message"):
        return str(error["message"])
    tail = [line for line in run.log_tail(20) if line.strip()]
    return f"{run.stage} {run.status}" + (f": {tail[-1].strip()[:200]}" if tail else "")


class NightFailed(StageError):
    """A step failed: the night's error event says which, with the night's outcome."""

    def __init__(self, night: dict) -> None:
        super().__init__(
            f"night failed at {night.get('failed_step')}: {night.get('error')}",
            hint="latest was not touched; see the step's run",
        )
        self.night = night

    def event_fields(self) -> dict:
        return {"outcome": self.night["outcome"], "failed_step": self.night.get("failed_step")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w4tui.nightly.night")
    parser.add_argument("--config")
    parser.add_argument("--night", required=True, help="the ledger key of this night")
    args = parser.parse_args(argv)
    # The supervisor's cancel escalates SIGINT -> SIGTERM: run_program takes both as Ctrl-C, and run_night
    # ends the night the same way for both (steps cancelled).
    return run_program(
        "nightly",
        lambda events: night_body(args, events),
        EventWriter.from_env("nightly"),
        lambda: {"night": args.night},
    )


def night_body(args: argparse.Namespace, events: EventWriter) -> dict:
    """The night as core/program.py's body: its ``done`` fields, or NightFailed."""
    config = load_config(args.config)  # a mistake: ConfigError, exit 2
    caffeinate = awake.keep_awake(config)
    try:
        night = run_night(config, args.night, events, run_id=events.run or None)
    except AlreadyRecorded:
        return {"outcome": "duplicate"}
    finally:
        if caffeinate is not None:
            caffeinate.terminate()
    outcome = night["outcome"]
    if outcome in (NightOutcome.PROMOTED, NightOutcome.SKIPPED):
        return {"outcome": outcome, "build": night.get("build"), "reason": night.get("reason")}
    if outcome == NightOutcome.CANCELLED:
        return {"status": RunStatus.CANCELLED, "outcome": outcome}
    raise NightFailed(night)


if __name__ == "__main__":
    sys.exit(main())
