"""The whole pipeline as one detached run (``python -m w4tui.runs.pipeline_job``), so the TUI or the CLI
can start it and go away (a closed terminal, a dropped SSH session): each stage is still its own run;
this run only chains them and records each step as a ``progress`` event.

A step's progress event carries ``step_stage``, ``step_run`` and, once the step ended, ``step_status``
(and ``step_artifact`` or ``step_error``). Cancelling this run (SIGINT from the supervisor) cancels the
stage it is waiting for as well.
"""

from __future__ import annotations

import argparse
import sys
import time

from core import specs
from core.config import ConfigError, load_config
from core.events import EventWriter
from core.names import EventKind, RunStatus
from w4tui.runs.pipeline import StepEvent, run_pipeline, stage_range, succeeded
from w4tui.runs.runner import RunError, Runner


def command(config_file: str, start: str | None = None, stop: str | None = None) -> list[str]:
    """The command line of a pipeline job over ``start``..``stop``."""
    args = [sys.executable, "-m", "w4tui.runs.pipeline_job", "--config", config_file]
    return args + (["--from", start] if start else []) + (["--to", stop] if stop else [])


def record(events: EventWriter, event: StepEvent) -> None:
    """One step event as the job's progress event, and a line in its log."""
    fields = {"step_stage": event.stage, "step_run": event.run_id}
    title = specs.BY_NAME[event.stage].title
    if event.kind == "started":
        message = f"{title}: run {event.run_id}"
        done = event.index
    else:
        fields["step_status"] = event.status
        if event.artifact:
            fields["step_artifact"] = event.artifact
        if event.error:
            fields["step_error"] = event.error
        message = f"{title}: {event.status}" + (f": {event.error}" if event.error else "")
        done = event.index + (event.status == RunStatus.SUCCEEDED)
    events.progress(done, event.total, "stages", message=message, **fields)
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w4tui.runs.pipeline_job")
    parser.add_argument("--config")
    parser.add_argument("--from", dest="start", choices=specs.NAMES)
    parser.add_argument("--to", dest="stop", choices=specs.NAMES)
    args = parser.parse_args(argv)
    events = EventWriter.from_env("pipeline")
    started = time.time()
    try:
        runner = Runner(load_config(args.config))
        stages = stage_range(args.start, args.stop)
    except (ConfigError, RunError) as exc:
        events.error(str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    events.emit(EventKind.START, stages=stages)
    try:
        ended = run_pipeline(runner, stages, on_event=lambda event: record(events, event))
    except RunError as exc:
        events.error(str(exc), hint="fix it and start the pipeline again")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        for run in runner.runs():
            if run.live and run.started >= started and run.stage != "pipeline":
                runner.cancel(run.id)
                print(f"cancelled {run.stage} run {run.id}", flush=True)
        events.done(RunStatus.CANCELLED)
        return 130
    if succeeded(ended, stages):
        events.done(stages=len(stages))
        return 0
    last = ended[-1]
    if last.status == RunStatus.CANCELLED:
        events.done(RunStatus.CANCELLED)
        return 130
    events.error(
        f"{last.stage} {last.status}" + (f": {last.error}" if last.error else ""),
        hint=f"see its run: {runner.config.cli} logs {last.run_id}",
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
