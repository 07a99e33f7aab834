"""What the stage form is filled with, and how the whole pipeline is started as one detached run."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ... import stagespec
from ...config import Config
from ...runner import Runner

PIPELINE = "pipeline"


@dataclass(frozen=True)
class Prepared:
    title: str
    args: list[str]
    note: str = ""           # why a field is empty (no input artifact yet)
    blank: str | None = None  # the flag the user must fill in


def prepare(runner: Runner, config: Config, stage: str, input_path: str | None, now: float) -> Prepared:
    """The form for ``stage``: its default arguments from the config and the newest input artifact.

    Without an input artifact the form still opens, with the input field empty and the reason above it."""
    if stage == PIPELINE:
        return Prepared("Run the pipeline (each stage a run of its own)",
                        ["--from", stagespec.NAMES[0], "--to", stagespec.NAMES[-1]])
    spec = stagespec.BY_NAME[stage]
    build = stagespec.stamp(now)
    if input_path is None and spec.needs and stage != "train":
        input_path = runner.latest_artifact(stagespec.NAMES[stagespec.NAMES.index(stage) - 1])
    title = f"{spec.title}  (python -m {spec.module})"
    try:
        return Prepared(title, stagespec.default_args(stage, config, input_path, build))
    except LookupError as exc:
        args = stagespec.default_args(stage, config, build, build)  # the build stamp stands in for the input
        blank = args[args.index(build) - 1]
        return Prepared(title, args, note=str(exc), blank=blank)


def pipeline_command(config: Config, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "w4tui.pipeline_job", "--config", str(config.file), *args]


def start(runner: Runner, config: Config, stage: str, args: list[str]):
    """Start ``stage`` (or the pipeline) with ``args``; RunError says why not."""
    if stage == PIPELINE:
        return runner.start_command(PIPELINE, pipeline_command(config, args))
    return runner.start(stage, args)
