"""The pipeline's stages: their modules, what each consumes and produces, which flag names its output,
and the default arguments each gets from the config. Standard library only (the TUI and the CLI import it).

Each stage ends by emitting an ``artifact`` event of its ``produces`` type; the next stage's input is
the newest such artifact of a succeeded run of ``input_from`` (``input_for``), so `w4tui run merge` with
no arguments merges the newest adapter, and the pipeline chains stages without parsing any output.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.config import Config


@dataclass(frozen=True)
class StageSpec:
    name: str  # what the CLI and the TUI call it
    module: str  # python -m <module>
    title: str
    produces: str  # artifact type its output has
    output_flag: str  # the flag that names what a run writes (the runner refuses two live writers)
    input_from: str | None  # the stage whose newest artifact is its input (None: the config is enough)
    input_flag: str | None = None  # the flag its input goes in


STAGES: tuple[StageSpec, ...] = (
    StageSpec("download", "stages.download", "Download base model", "model", "--output", None),
    StageSpec("train", "stages.train_lora", "Train LoRA adapter", "adapter", "--output", None, "--base_model"),
    StageSpec("merge", "stages.merge_lora", "Merge adapter", "merged", "--output", "train", "--adapter"),
    StageSpec("convert", "stages.convert_gguf", "Convert to GGUF", "gguf", "--output", "merge", "--model"),
    StageSpec("quantize", "stages.quantize", "Quantize", "gguf", "--output", "convert", "--input"),
    StageSpec("deploy", "stages.deploy_ollama", "Deploy to Ollama", "ollama", "--tag", "quantize", "--gguf"),
    StageSpec("verify", "stages.verify", "Verify and promote", "verified", "--model", "deploy", "--model"),
)
# Stages outside the pipeline, run on their own (`w4tui run eval`, `w4tui eval`).
EXTRA: tuple[StageSpec, ...] = (
    StageSpec("eval", "stages.evaluate", "Evaluate quantizations", "eval", "--output", "quantize", "--gguf"),
)
BY_NAME = {spec.name: spec for spec in STAGES + EXTRA}
NAMES = tuple(spec.name for spec in STAGES)  # the pipeline, in order
RUNNABLE = NAMES + tuple(spec.name for spec in EXTRA)


def stamp(now: float | None = None) -> str:
    """A build stamp for names and tags, unique to the second: 20261126-213005."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def input_for(stage: str, latest: Callable[[str], str | None], extra: list[str] = ()) -> str | None:
    """The one input rule: the input the user named in ``extra`` (the stage's input flag), else the
    newest artifact of the stage before (``latest(stage)`` finds it)."""
    spec = BY_NAME[stage]
    named = [v for f, v in flag_values(list(extra)) if spec.input_flag and _key(f) == _key(spec.input_flag)]
    if named and named[-1]:
        return named[-1][0]
    return latest(spec.input_from) if spec.input_from else None


def output_of(stage: str, args: list[str]) -> str | None:
    """What a run of ``stage`` with ``args`` writes: the value of its spec's output flag (paths absolute)."""
    spec = BY_NAME.get(stage)
    flag = spec.output_flag if spec else "--output"
    value = dict(flag_values(args)).get(flag)
    if not value:
        return None
    return str(Path(value[0]).resolve()) if flag == "--output" else value[0]


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


def train_batch(args: list[str], config: Config) -> dict[str, int | str]:
    """A training's ranks and its global batch (samples per optimizer step): per-rank batch x ranks
    (per node, times nodes) x accumulation, and what each rank holds of the base (``shard``), from its
    flags, else the config's [train]."""
    given = {_key(f): v[0] for f, v in flag_values(args) if f and v}
    t = config.train

    def number(name: str, default: int) -> int:
        try:
            return int(given.get(name, default))
        except ValueError:
            return default  # the stage names a bad value itself

    ranks = number("gpus", t.gpus) * number("nnodes", 1)
    batch, accumulation = number("batch_size", t.batch_size), number("gradient_accumulation", t.gradient_accumulation)
    return {
        "ranks": ranks,
        "batch_size": batch,
        "gradient_accumulation": accumulation,
        "global_batch": batch * ranks * accumulation,
        "shard": str(given.get("shard", t.shard)),
    }


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


# -- flag-by-flag overrides ---------------------------------------------------------------------


def flag_values(args: list[str]) -> list[tuple[str, list[str]]]:
    """``["--a", "1", "--on", "--b=2", "x"]`` -> ``[("--a", ["1"]), ("--on", []), ("--b", ["2", "x"])]``.

    Tokens before the first flag are kept under the empty flag ``""``."""
    out: list[tuple[str, list[str]]] = []
    for token in args:
        if token.startswith("--") and len(token) > 2:
            flag, eq, value = token.partition("=")
            out.append((flag, [value] if eq else []))
        elif out:
            out[-1][1].append(token)
        else:
            out.append(("", [token]))
    return out


def canonical(args: list[str]) -> list[str]:
    """Flags in the one spelling the stages' help shows (snake_case: --base-model -> --base_model);
    values are left as they are. For readers of a command line (pre-flight), not for the stages."""
    out = []
    for token in args:
        if token.startswith("--") and len(token) > 2:
            flag, eq, value = token.partition("=")
            token = "--" + flag[2:].replace("-", "_") + eq + value
        out.append(token)
    return out


def _key(flag: str) -> str:
    # --base-model and --base_model are one flag; --no-promote switches --promote off.
    name = flag.removeprefix("--").replace("-", "_")
    return name.removeprefix("no_")


def override(defaults: list[str], extra: list[str]) -> list[str]:
    """``defaults`` with each flag in ``extra`` replacing the same flag (any spelling, or its ``--no-``
    form) in place; flags the defaults lack are appended. ``run train -- --epochs 3`` keeps the rest."""
    merged = flag_values(defaults)
    for flag, values in flag_values(extra):
        at = next((i for i, (f, _) in enumerate(merged) if f and _key(f) == _key(flag)), None)
        if at is None:
            merged.append((flag, values))
        else:
            merged[at] = (flag, values)
    return [token for flag, values in merged for token in ([flag] if flag else []) + values]
