"""Run a range of pipeline stages in order, each as a normal detached run, chaining artifacts."""

from __future__ import annotations

import sys
from typing import TextIO

from . import stagespec
from .follow import follow
from .runner import RunError, Runner


def stage_range(start: str | None, stop: str | None) -> list[str]:
    names = list(stagespec.NAMES)
    for value in (start, stop):
        if value is not None and value not in names:
            raise RunError(f"unknown stage '{value}' (stages: {', '.join(names)})")
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    if first > last:
        raise RunError(f"--from {start} comes after --to {stop} in the pipeline ({' > '.join(names)})")
    return names[first:last + 1]


def run_pipeline(runner: Runner, stages: list[str], out: TextIO = sys.stdout) -> int:
    """Run ``stages`` one after another; stop at the first that does not succeed. Returns an exit code."""
    build = stagespec.stamp()
    previous_output: str | None = None
    for position, stage in enumerate(stages):
        spec = stagespec.BY_NAME[stage]
        if position == 0 and spec.needs and stage != "train":
            before = stagespec.NAMES[stagespec.NAMES.index(stage) - 1]
            previous_output = runner.latest_artifact(before)
        run = runner.start(stage, build=build, input_path=previous_output)
        print(f"== {spec.title}: run {run.id}", file=out, flush=True)
        try:
            status = follow(runner, run, out)
        except KeyboardInterrupt:
            print(f"\npipeline stopped; {stage} run {run.id} keeps running (w4tui cancel {run.id} to stop it)",
                  file=out)
            return 130
        if status != "succeeded":
            finished = runner.get(run.id)
            error = finished.error()
            print(f"pipeline stopped: {stage} {status}" + (f": {error['message']}" if error else ""), file=out)
            if not error:
                print("\n".join(["-- last lines of output.log:", *finished.log_tail(15)]), file=out)
            return 1
        produced = [a["path"] for a in runner.get(run.id).artifacts() if a.get("type") == spec.produces]
        previous_output = produced[-1] if produced else None
    print(f"pipeline succeeded: {' > '.join(stages)}", file=out)
    return 0
