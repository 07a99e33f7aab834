"""What the stage form is filled with, and how the whole pipeline is started as one detached run."""

from __future__ import annotations

from dataclasses import dataclass

from w4tui.config import Config
from w4tui.runs import specs
from w4tui.runs.runner import Runner

PIPELINE = "pipeline"


@dataclass(frozen=True)
class Prepared:
    title: str
    args: list[str]
    note: str = ""  # why a field is empty (no input artifact yet)
    blank: str | None = None  # the flag the user must fill in


def prepare(runner: Runner, config: Config, stage: str, input_path: str | None, now: float) -> Prepared:
    """The form for ``stage``: its default arguments from the config and the newest input artifact.

    Without an input artifact the form still opens, with the input field empty and the reason above it."""
    if stage == PIPELINE:
        return Prepared(
            "Run the pipeline (each stage a run of its own)", ["--from", specs.NAMES[0], "--to", specs.NAMES[-1]]
        )
    spec = specs.BY_NAME[stage]
    build = specs.stamp(now)
    if input_path is None:
        input_path = specs.input_for(stage, runner.latest_artifact)
    title = f"{spec.title}  (python -m {spec.module})"
    try:
        return Prepared(title, specs.default_args(stage, config, input_path, build))
    except LookupError as exc:
        args = specs.default_args(stage, config, build, build)  # the build stamp stands in for the input
        blank = args[args.index(build) - 1]
        return Prepared(title, args, note=str(exc), blank=blank)


def pipeline_command(config: Config, args: list[str]) -> list[str]:
    from w4tui.runs.pipeline_job import command

    return command(str(config.file)) + args


def start(runner: Runner, config: Config, stage: str, args: list[str]):
    """Start ``stage`` (or the pipeline) with ``args``; RunError says why not."""
    if stage == PIPELINE:
        return runner.start_command(PIPELINE, pipeline_command(config, args))
    return runner.start(stage, args)
