"""The whole pipeline as one detached run (``python -m w4tui.pipeline_job``), so the TUI can start it and
quit: each stage is still its own run; this run only chains them and reports where it is in events.

Cancelling this run (SIGINT from the supervisor) cancels the stage it is waiting for as well.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

from . import stagespec
from .config import ConfigError, load_config
from .events import EventWriter
from .pipeline import run_pipeline, stage_range
from .runner import RunError, Runner


class _Tee(io.TextIOBase):
    """run_pipeline's printed lines go to the log and become progress events."""

    def __init__(self, events: EventWriter, stages: list[str]) -> None:
        self.events, self.stages, self.buffer = events, stages, ""

    def write(self, text: str) -> int:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            if line.startswith("== "):  # "== <title>: run <id>", printed as each stage starts
                title = line[3:].split(":", 1)[0]
                done = next((i for i, s in enumerate(self.stages) if stagespec.BY_NAME[s].title == title), 0)
                self.events.progress(done, len(self.stages), "stages", message=line[3:])
        return len(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w4tui.pipeline_job")
    parser.add_argument("--config")
    parser.add_argument("--from", dest="start", choices=stagespec.NAMES)
    parser.add_argument("--to", dest="stop", choices=stagespec.NAMES)
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
    events.emit("start", stages=stages)
    try:
        code = run_pipeline(runner, stages, out=_Tee(events, stages))
    except RunError as exc:
        events.error(str(exc), hint="fix it and start the pipeline again")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if code == 130:
        for run in runner.runs():
            if run.live and run.started >= started and run.stage != "pipeline":
                runner.cancel(run.id)
                print(f"cancelled {run.stage} run {run.id}", flush=True)
        events.done("cancelled")
    elif code == 0:
        events.progress(len(stages), len(stages), "stages", message="all stages succeeded")
        events.done(stages=len(stages))
    else:
        events.error("a stage did not succeed; see its run", hint="the log above names the stage and its error")
    return code


if __name__ == "__main__":
    sys.exit(main())
