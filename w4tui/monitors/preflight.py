"""Checks before a stage starts, with the numbers: free disk against what the stage will write, the
training's memory estimate against what is available once Ollama has unloaded, one training per
machine, and a warning on battery. ``Runner.start`` calls ``check`` (so the CLI, the TUI and the nightly
all get it) unless the run is forced; a refusal is a ``RunError`` that says what would make it fit.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

from . import estimate as est

MARGIN = 1_000_000_000  # disk kept free beyond the estimate
GGUF_BYTES_PER_PARAM = {"F16": 2.0, "Q4_K_M": 0.6, "Q4_K_S": 0.57, "Q5_K_M": 0.71, "Q6_K": 0.82, "Q8_0": 1.07}
TRAIN_MODULE = "stages.train_lora"


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"  # 10^9 bytes, as the README's figures


def check(runner, stage: str, args: list[str], *, probe: Probe | None = None) -> list[str]:
    """Raise ``RunError`` (figures, and the setting that would fit) when ``stage`` with ``args`` cannot
    succeed on this machine; return warnings that do not stop it."""
    from ..runs.runner import RunError  # the runner imports this module lazily: no cycle at import

    probe = probe or Probe(runner.config)
    problems = [
        p
        for p in (
            _disk(runner.config, stage, args, probe),
            *(_training(runner.config, args, probe) if stage == "train" else ()),
        )
        if p
    ]
    if problems:
        raise RunError("; ".join(problems) + f" (to start it anyway: w4tui run {stage} --force)")
    warnings = []
    if stage == "train":
        power = probe.power()
        if power is not None and power.on_battery:
            warnings.append(f"on battery ({power.percent}%, {power.state}): a long training may drain it; plug in")
    return warnings


def record(run, warnings: list[str]) -> None:
    """Put the warnings in the run's events, where the panes and the nightly history see them."""
    if not warnings:
        return
    from ..events import EventWriter

    writer = EventWriter(run.stage, run.events_path, run.id)
    try:
        for text in warnings:
            writer.log(text, level="warning", source="preflight")
    finally:
        writer.close()


class Probe:
    """What the checks measure, in one place so tests can script it."""

    def __init__(self, config) -> None:
        self.config = config

    def free_disk(self, path: Path) -> int:
        for candidate in (path, *path.parents):
            if candidate.exists():
                return shutil.disk_usage(candidate).free
        return shutil.disk_usage("/").free

    def memory(self, requested: str) -> tuple[str, int | None, str]:
        """(device the training will use, bytes free for it, what they are): unified RAM on a Mac and on
        the CPU, the first GPU's free memory (NVML) with CUDA; None when that cannot be told."""
        import psutil

        if platform.system() == "Darwin" or requested == "cpu":
            return ("mps" if requested in ("auto", "mps") else requested), psutil.virtual_memory().available, "free RAM"
        from .nvidia import NvidiaProbe

        gpus = NvidiaProbe().read()
        if gpus and gpus[0].total:
            return "cuda", gpus[0].total - (gpus[0].in_use or 0), f"free on {gpus[0].name}"
        if requested == "cuda" or Path("/dev/nvidia0").exists():
            return "cuda", None, "GPU memory (unknown without nvidia-ml-py)"
        return "cpu", psutil.virtual_memory().available, "free RAM"

    def ollama_loaded(self, on_gpu: bool = False) -> int:
        """Bytes Ollama's loaded models hold (on the GPU: size_vram); the runner unloads them before training."""
        from ..ollama_client import OllamaError, running

        try:
            return sum(int(m.get("size_vram" if on_gpu else "size") or 0) for m in running(self.config))
        except OllamaError:
            return 0

    def trainings(self) -> list[tuple[int, str]]:
        """(pid, command line) of every training process on this machine, whoever started it."""
        import psutil

        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if TRAIN_MODULE in cmd and proc.info["pid"] != os.getpid():
                found.append((proc.info["pid"], " ".join(cmd)))
        return found

    def power(self):
        if platform.system() != "Darwin":
            return None
        from .macos import UnexpectedOutput, parse_pmset_batt
        from .sampler import ToolProblem, run_tool

        try:
            return parse_pmset_batt(run_tool(["pmset", "-g", "batt"]))
        except (ToolProblem, UnexpectedOutput):
            return None


def _flag(args: list[str], name: str, default: str | None = None) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _disk(config, stage: str, args: list[str], probe: Probe) -> str | None:
    output = _flag(args, "--output")
    if output is None:
        return None
    out = Path(output)
    need, what = _disk_need(config, stage, args, out)
    if need is None:
        return None
    have = _tree_size(out)
    # A download resumes into its directory; any other output is replaced, and the old one stays until
    # the new one is renamed into place.
    need = max(0, need - have) if stage == "download" else need + have
    free = probe.free_disk(out)
    if need + MARGIN <= free:
        return None
    return (
        f"not enough disk for {stage}: it writes ~{gb(need)} ({what}) and keeps {gb(MARGIN)} free, "
        f"but {gb(free)} is free at {out.parent}; free some space or point [paths] outputs at a bigger disk"
    )


def _disk_need(config, stage: str, args: list[str], out: Path) -> tuple[int | None, str]:
    if stage == "download":
        repo = _flag(args, "--repo") or config.model.base
        if Path(repo).is_dir():
            return _tree_size(Path(repo)), f"a copy of {repo}"
        if repo == "Qwen/Qwen2.5-Coder-7B-Instruct":  # the default; another hub repo's size is not known offline
            return est.QWEN25_7B.params * 2, "a 7B model in bf16, 2 bytes/param"
        return None, ""
    if stage == "train":
        lora = est.lora_params(
            _shape(args, config), int(_flag(args, "--lora_r", str(config.train.lora_r))), _targets(args, config)
        )
        return lora * (4 + 2 * est.LORA_BYTES_PER_PARAM), "the adapter and two checkpoints with optimizer state"
    if stage == "merge":
        base = Path(_flag(args, "--base_model") or config.model.dir)
        return _tree_size(base), "a merged copy of the base model"
    if stage == "convert":
        model = Path(_flag(args, "--model") or "")
        return _tree_size(model), "an F16 GGUF, ~2 bytes/param"
    if stage == "quantize":
        source = Path(_flag(args, "--input") or "")
        kind = _flag(args, "--type", config.quantize.type)
        ratio = GGUF_BYTES_PER_PARAM.get(kind, 1.07) / GGUF_BYTES_PER_PARAM["F16"]
        return round(_tree_size(source) * ratio), f"{kind} ~{GGUF_BYTES_PER_PARAM.get(kind, 1.07)} bytes/param"
    return None, ""


def _shape(args: list[str], config) -> est.ModelShape:
    base = Path(_flag(args, "--base_model") or config.model.dir)
    try:
        return est.ModelShape.from_config(json.loads((base / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return est.QWEN25_7B  # not downloaded yet: the model the config names by default


def _targets(args: list[str], config) -> list[str]:
    if "--target_modules" not in args:
        return list(config.train.target_modules)
    rest = args[args.index("--target_modules") + 1 :]
    return [a for a in rest[: next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]]


def _training(config, args: list[str], probe: Probe) -> list[str]:
    problems = []
    others = probe.trainings()
    if others:
        pid, cmd = others[0]
        problems.append(
            f"another training is running on this machine (pid {pid}: {cmd[:80]}); two 7B trainings "
            f"cannot both fit in memory: wait for it or cancel it"
        )
    t = config.train
    device = _flag(args, "--device", t.device)
    ckpt = t.gradient_checkpointing
    for arg in args:
        if arg in ("--gradient_checkpointing", "--no-gradient_checkpointing"):
            ckpt = arg == "--gradient_checkpointing"
    seq, batch = (
        int(_flag(args, "--max_seq_length", str(t.max_seq_length))),
        int(_flag(args, "--batch_size", str(t.batch_size))),
    )
    device, free, where = probe.memory(device)
    if free is None:
        return problems  # nothing to compare with: no refusal on a guess
    dtype = "float32" if device == "cpu" else "bfloat16"
    shape, r, targets = _shape(args, config), int(_flag(args, "--lora_r", str(t.lora_r))), _targets(args, config)

    def need(s: int, b: int, c: bool) -> est.TrainingMemory:  # CUDA's SDPA kernels never hold the s x s scores
        return est.training_memory(shape, dtype, s, b, c, r, targets, fused_attention=device == "cuda")

    mem = need(seq, batch, ckpt)
    ollama = probe.ollama_loaded(on_gpu=device == "cuda")
    available = free + ollama
    if mem.total <= available:
        return problems
    fix = _what_fits(need, seq, batch, ckpt, available)
    problems.append(
        f"train needs ~{gb(mem.total)} of memory (base weights {gb(mem.weights)} {dtype}, LoRA + AdamW "
        f"{gb(mem.lora)}, activations {gb(mem.activations)} for {seq} tokens x {batch} "
        f"{'with' if ckpt else 'without'} gradient checkpointing, {gb(mem.overhead)} overhead) but "
        f"{gb(available)} is available ({gb(free)} {where} + {gb(ollama)} Ollama will unload); {fix}"
    )
    return problems


def _what_fits(
    need: Callable[[int, int, bool], est.TrainingMemory], seq: int, batch: int, ckpt: bool, available: int
) -> str:
    options = []
    if not ckpt:
        options.append(("--gradient_checkpointing", seq, batch, True))
    if batch > 1:
        options.append(("--batch_size 1 (raise --gradient_accumulation to keep the effective batch)", seq, 1, ckpt))
    s = seq // 2
    while s >= 256:
        options.append((f"--max_seq_length {s}" + ("" if ckpt else " --gradient_checkpointing"), s, 1, True))
        s //= 2
    for flag, s, b, c in options:
        total = need(s, b, c).total
        if total <= available:
            return f"it fits with {flag} (~{gb(total)})"
    return f"even the base weights need {gb(need(256, 1, True).weights)}: close other apps or train a smaller model"
