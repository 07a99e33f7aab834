"""The pipeline's stages: their modules, what each consumes and produces, which flag names its output,
and the default arguments each gets from the config. Standard library only (the TUI and the CLI import it).

Each stage ends by emitting an ``artifact`` event of its ``produces`` type; the next stage's input is
the newest such artifact of a succeeded run of ``input_from`` (``input_for``), so `w4tui run merge` with
no arguments merges the newest adapter, and the pipeline chains stages without parsing any output.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core import parsers, trainsettings
from core.config import Config
from core.errors import UsageError
from core.parsers import StageArgumentParser


@dataclass(frozen=True)
class StageSpec:
    name: str  # what the CLI and the TUI call it
    module: str  # python -m <module>
    title: str
    produces: str  # artifact type its output has
    output_flag: str  # the flag that names what a run writes (the runner refuses two live writers)
    input_from: str | None  # the stage whose newest artifact is its input (None: the config is enough)
    input_flag: str | None = None  # the flag its input goes in
    # The stage's own parser (core/parsers.py), which ``python -m <module>`` parses its argv with.
    build_parser: Callable[[Config], StageArgumentParser] = field(kw_only=True, repr=False)

    def parser(self, config: Config) -> StageArgumentParser:
        return self.build_parser(config)

    def invoke(self, config: Config, argv: list[str]) -> Invocation:
        """``argv`` parsed as the stage will parse it (its defaults from ``config``, the config the
        stage is given). A command line the stage refuses keeps its one-line error in ``error``."""
        argv = tuple(argv)
        if HELP & set(argv):
            return Invocation(self, argv, None)  # the stage prints its help; nothing to check
        try:
            return Invocation(self, argv, self.parser(config).parse_args(list(argv)))
        except UsageError as exc:
            return Invocation(self, argv, None, exc.message)

    def given(self, config: Config, argv: list[str]) -> dict[str, object]:
        """What the flags in ``argv`` set, without the defaults (see StageArgumentParser.given)."""
        return self.parser(config).given(list(argv))


HELP = {"-h", "--help"}


@dataclass(frozen=True)
class Invocation:
    """One call of a stage, parsed once: the CLI, the TUI's form and the night build it, pre-flight
    reads ``args``, the runner starts ``command``. ``args`` is None for ``--help`` and for a command
    line the stage refuses (``error``: its own words, which its run will say too)."""

    spec: StageSpec
    argv: tuple[str, ...]
    args: argparse.Namespace | None
    error: str | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", self.spec.module, *self.argv]

    @property
    def output(self) -> str | None:
        """What the run writes: its output flag's value (a path made absolute); no two live runs share one."""
        value = getattr(self.args, self.spec.output_flag[2:], None)
        if value is None:
            return None
        return str(Path(value).resolve()) if isinstance(value, Path) else str(value)


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "download", "stages.download", "Download base model", "model", "--output", None, build_parser=parsers.download
    ),
    StageSpec(
        "train",
        "stages.train_lora",
        "Train LoRA adapter",
        "adapter",
        "--output",
        None,
        "--base_model",
        build_parser=trainsettings.parser,
    ),
    StageSpec(
        "merge",
        "stages.merge_lora",
        "Merge adapter",
        "merged",
        "--output",
        "train",
        "--adapter",
        build_parser=parsers.merge,
    ),
    StageSpec(
        "convert",
        "stages.convert_gguf",
        "Convert to GGUF",
        "gguf",
        "--output",
        "merge",
        "--model",
        build_parser=parsers.convert,
    ),
    StageSpec(
        "quantize",
        "stages.quantize",
        "Quantize",
        "gguf",
        "--output",
        "convert",
        "--input",
        build_parser=parsers.quantize,
    ),
    StageSpec(
        "deploy",
        "stages.deploy_ollama",
        "Deploy to Ollama",
        "ollama",
        "--tag",
        "quantize",
        "--gguf",
        build_parser=parsers.deploy,
    ),
    StageSpec(
        "verify",
        "stages.verify",
        "Verify and promote",
        "verified",
        "--model",
        "deploy",
        "--model",
        build_parser=parsers.verify,
    ),
)
# Stages outside the pipeline, run on their own (`w4tui run eval`, `w4tui eval`).
EXTRA: tuple[StageSpec, ...] = (
    StageSpec(
        "eval",
        "stages.evaluate",
        "Evaluate quantizations",
        "eval",
        "--output",
        "quantize",
        "--gguf",
        build_parser=parsers.evaluate,
    ),
)
BY_NAME = {spec.name: spec for spec in STAGES + EXTRA}
NAMES = tuple(spec.name for spec in STAGES)  # the pipeline, in order
RUNNABLE = NAMES + tuple(spec.name for spec in EXTRA)


def stamp(now: float | None = None) -> str:
    """A build stamp for names and tags, unique to the second: 20261126-213005."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def input_for(stage: str, latest: Callable[[str], str | None], given: dict[str, object] | None = None) -> str | None:
    """The one input rule: the input the user named (``given``: what their flags set, by destination),
    else the newest artifact of the stage before (``latest(stage)`` finds it)."""
    spec = BY_NAME[stage]
    named = (given or {}).get(spec.input_flag[2:]) if spec.input_flag else None
    if named:
        return str(named)
    return latest(spec.input_from) if spec.input_from else None


def default_args(stage: str, config: Config, input_path: str | None, build: str) -> list[str]:
    """The arguments a stage gets from the config when launched without explicit ones.

    ``input_path`` is the artifact the stage consumes (see ``input_for``); ``build`` names outputs.
    """
    out = config.paths.outputs
    model_dir = str(config.model.dir)
    if stage == "download":
        source = config.base_dir / config.model.base
        repo = str(source) if source.is_dir() else config.model.base
        return ["--repo", repo, "--revision", config.model.revision, "--output", model_dir]
    if stage == "train":
        return [
            "--base_model",
            input_path or model_dir,
            "--dataset",
            str(config.paths.data),
            "--output",
            str(out / "adapters" / build),
        ]
    name = Path(input_path).name if input_path else build
    if stage == "merge":
        return [
            "--adapter",
            _need(stage, input_path),
            "--base_model",
            model_dir,
            "--output",
            str(out / "merged" / name),
        ]
    if stage == "convert":
        return ["--model", _need(stage, input_path), "--output", str(out / "gguf" / f"{name}-f16.gguf")]
    if stage == "quantize":
        source = _need(stage, input_path)
        stem = Path(source).name.removesuffix(".gguf").removesuffix("-f16")
        output = str(out / "gguf" / f"{stem}-{config.quantize.type}.gguf")
        return ["--input", source, "--output", output, "--type", config.quantize.type]
    if stage == "deploy":
        # The build is named after its GGUF, so an old GGUF deployed today keeps its own date.
        tag = _tag(f"build-{name.removesuffix('.gguf')}") if input_path else f"build-{build}"
        return ["--gguf", _need(stage, input_path), "--tag", tag]
    if stage == "verify":
        return ["--model", _need(stage, input_path), "--promote"]
    if stage == "eval":  # the table goes beside the build: <build>-eval.json (stages.evaluate finds the F16)
        source = _need(stage, input_path)
        stem = re.sub(r"-(f16|bf16|f32|q\d\w*)$", "", Path(source).name.removesuffix(".gguf"), flags=re.I)
        return ["--gguf", source, "--output", str(Path(source).with_name(f"{stem}-eval.json"))]
    raise KeyError(stage)


def _tag(text: str) -> str:
    # An Ollama tag: 1-80 of [A-Za-z0-9_.-], starting with a letter, digit or _ (types/model/name.go).
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:80]


def _need(stage: str, path: str | None) -> str:
    if not path:
        spec = BY_NAME[stage]
        raise LookupError(
            f"no {BY_NAME[spec.input_from].produces if spec.input_from else 'input'} to {stage} yet: "
            f"run the stage before it first (w4tui run {spec.input_from}) or pass arguments after --"
        )
    return path
