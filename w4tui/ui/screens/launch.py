"""What the stage form is filled with, and how the whole pipeline is started as one detached run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core import specs, trainsettings
from core.config import Config
from core.errors import StageError
from core.train_backend import detect
from w4tui.runs.pipeline_job import command
from w4tui.runs.runner import Runner
from w4tui.runs.start import checked_start
from w4tui.runs.supervise import read_record

PIPELINE = "pipeline"


@dataclass(frozen=True)
class Prepared:
    title: str
    args: list[str]
    note: str = ""  # why a field is empty (no input artifact yet)
    blank: str | None = None  # the flag the user must fill in
    example: str = ""  # more flags the stage takes, for the "more flags" field
    dataset: Path | None = None  # a train form's dataset: the form previews samples, tokens and steps


# Flags each stage takes beyond its defaults (see `python -m stages.<module> --help`).
EXAMPLES = {
    "download": "e.g. --revision main",
    "train": "e.g. --batch_size 2 --gradient_accumulation 8 --eval_fraction 0.1 --seed 1",
    "merge": "none needed",
    "convert": "e.g. --outtype bf16 --name web4-agent",
    "quantize": "e.g. --threads 4",
    "deploy": "e.g. --modelfile FILE (a Modelfile of your own)",
    "verify": "e.g. --prompt 'Write a PDCA for …' (instead of [verify] prompts)",
}


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
    example = EXAMPLES.get(stage, "")
    if stage == "train":
        args = specs.default_args(stage, config, input_path, build) + training_settings(config)
        return Prepared(title, args, example=example, dataset=config.paths.data)
    try:
        return Prepared(title, specs.default_args(stage, config, input_path, build), example=example)
    except LookupError as exc:
        args = specs.default_args(stage, config, build, build)  # the build stamp stands in for the input
        blank = args[args.index(build) - 1]
        return Prepared(title, args, note=str(exc), blank=blank, example=example)


def training_settings(config: Config) -> list[str]:
    """The settings a person changes before a training (core/trainsettings.py FORM), as flags with the
    config's values; then the profile, the trainer, and on a GPU box its ranks."""
    t = config.train
    values = [
        [f"--{name}", trainsettings.form_value(getattr(t, name))] for name in trainsettings.names(trainsettings.FORM)
    ]
    return [
        *(token for pair in values for token in pair),
        "--profile",
        "full",
        *backend_settings(config),
    ] + (["--gpus", str(t.gpus)] if t.gpus > 1 else [])  # a GPU box's form; a Mac's stays as it was


def backend_settings(config: Config) -> list[str]:
    """Which trainer, as it will be on this machine (auto resolved), and mlx's base precision: the form
    says what will train the build. mlx asked for but missing stays as asked (the stage says how to install)."""
    t = config.train
    try:
        backend = detect(t.backend)
    except StageError:
        return ["--backend", t.backend]
    return ["--backend", backend, *(["--quantize_base", str(t.quantize_base)] if backend == "mlx" else [])]


def prepare_resume(run_dir, run_id: str) -> Prepared:
    """The form to resume a stopped training: its own arguments, plus ``--resume`` (the stage continues
    from the newest checkpoint in its --output and refuses changed training settings). LookupError: no
    checkpoint to resume from."""
    record = read_record(Path(run_dir))
    command, output = record["command"], record.get("output")  # the runner's record of its --output
    args = command[command.index("-m") + 2 :] if "-m" in command else command[1:]
    checkpoints = sorted((Path(output) / "checkpoints").glob("step-*")) if output else []
    if not checkpoints:
        raise LookupError(f"train run {run_id} saved no checkpoint: nothing to resume; start train again (5, s)")
    return Prepared(
        f"Resume training {run_id}  (python -m stages.train_lora … --resume)",
        [*args, *([] if "--resume" in args else ["--resume"])],
        note=f"continues from {checkpoints[-1].name} in {output}",
    )


def pipeline_command(config: Config, args: list[str]) -> list[str]:
    return command(str(config.file)) + args


def start(runner: Runner, config: Config, stage: str, args: list[str]):
    """Start ``stage`` (or the pipeline) with the form's ``args`` (no defaults added), after pre-flight;
    RunError says why not."""
    if stage == PIPELINE:
        return runner.start_command(PIPELINE, pipeline_command(config, args))
    return checked_start(runner, runner.invocation(stage, args=args))
