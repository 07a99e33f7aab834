"""The pipeline's stages: their modules, what each consumes and produces, and the default
arguments each gets from the config. Standard library only (the TUI and the CLI import it).

Each stage ends by emitting an ``artifact`` event of its ``produces`` type; the next stage's input is
the newest such artifact of a succeeded run, so `w4tui run merge` with no arguments merges the
newest adapter, and the pipeline chains stages without parsing any output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config


@dataclass(frozen=True)
class StageSpec:
    name: str          # what the CLI and the TUI call it
    module: str        # python -m <module>
    title: str
    produces: str      # artifact type its output has
    needs: str | None  # artifact type of its input (None: the config is enough)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("download", "stages.download", "Download base model", "model", None),
    StageSpec("train", "stages.train_lora", "Train LoRA adapter", "adapter", "model"),
    StageSpec("merge", "stages.merge_lora", "Merge adapter", "merged", "adapter"),
    StageSpec("convert", "stages.convert_gguf", "Convert to GGUF", "gguf", "merged"),
    StageSpec("quantize", "stages.quantize", "Quantize", "gguf", "gguf"),
    StageSpec("deploy", "stages.deploy_ollama", "Deploy to Ollama", "ollama", "gguf"),
    StageSpec("verify", "stages.verify", "Verify and promote", "verified", "ollama"),
)
BY_NAME = {spec.name: spec for spec in STAGES}
NAMES = tuple(spec.name for spec in STAGES)


def stamp(now: float | None = None) -> str:
    """A build stamp for names and tags: 20261126-2130."""
    return time.strftime("%Y%m%d-%H%M", time.localtime(now))


def default_args(stage: str, config: Config, input_path: str | None, build: str) -> list[str]:
    """The arguments a stage gets from the config when launched without explicit ones.

    ``input_path`` is the artifact the stage consumes (see ``StageSpec.needs``); ``build`` names outputs.
    """
    out = config.paths.outputs
    model_dir = str(config.model.dir)
    if stage == "download":
        source = config.base_dir / config.model.base
        repo = str(source) if source.is_dir() else config.model.base
        return ["--repo", repo, "--revision", config.model.revision, "--output", model_dir]
    if stage == "train":
        return ["--base_model", input_path or model_dir, "--dataset", str(config.paths.data),
                "--output", str(out / "adapters" / build)]
    name = Path(input_path).name if input_path else build
    if stage == "merge":
        return ["--adapter", _need(stage, input_path), "--base_model", model_dir,
                "--output", str(out / "merged" / name)]
    if stage == "convert":
        return ["--model", _need(stage, input_path), "--output", str(out / "gguf" / f"{name}-f16.gguf")]
    if stage == "quantize":
        source = _need(stage, input_path)
        stem = Path(source).name.removesuffix(".gguf").removesuffix("-f16")
        return ["--input", source, "--output", str(out / "gguf" / f"{stem}-{config.quantize.type}.gguf"),
                "--type", config.quantize.type]
    if stage == "deploy":
        return ["--gguf", _need(stage, input_path), "--tag", f"build-{build}"]
    if stage == "verify":
        return ["--model", _need(stage, input_path), "--promote"]
    raise KeyError(stage)


def _need(stage: str, path: str | None) -> str:
    if not path:
        spec = BY_NAME[stage]
        raise LookupError(f"no {spec.needs} to {stage} yet: run the stage before it first "
                          f"(w4tui run {NAMES[NAMES.index(stage) - 1]}) or pass arguments after --")
    return path
