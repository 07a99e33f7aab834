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
from core.config import load_config
from core.errors import StageError
from core.events import EventWriter
from core.names import RunStatus
from core.program import run_program
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
    job = _Job(args)
    return run_program("pipeline", job.run, EventWriter.from_env("pipeline"), start=job.start)


class _Job:
    """The pipeline job's two halves for core/program.py's entry: what it starts (a config mistake or a bad
    range ends it there, exit 2), then the chain."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.started = args, time.time()

    def start(self) -> dict:
        self.runner = Runner(load_config(self.args.config))
        self.stages = stage_range(self.args.start, self.args.stop)
        return {"stages": self.stages}

    def run(self, events: EventWriter) -> dict:
        runner, stages = self.runner, self.stages
        try:
            ended = run_pipeline(runner, stages, on_event=lambda event: record(events, event))
        except RunError as exc:  # a step the runner refused: the pipeline failed (1), not its command line
            raise StageError(exc.message, hint="fix it and start the pipeline again") from None
        except KeyboardInterrupt:
            for run in runner.runs():
                if run.live and run.started >= self.started and run.stage != "pipeline":
                    runner.cancel(run.id)
                    print(f"cancelled {run.stage} run {run.id}", flush=True)
            raise
        if succeeded(ended, stages):
            return {"stages": len(stages)}
        last = ended[-1]
        if last.status == RunStatus.CANCELLED:
            return {"status": RunStatus.CANCELLED}
        raise StageError(
            f"{last.stage} {last.status}" + (f": {last.error}" if last.error else ""),
            hint=f"see its run: {runner.config.cli} logs {last.run_id}",
        )


if __name__ == "__main__":
    sys.exit(main())
