"""Checks before a stage starts, with the numbers: free disk against what the stage will write, the
training's memory estimate against what is available once Ollama has unloaded, a second training
refused when the two cannot both fit (two 7B runs on a 32 GB Mac never can), and a warning on battery.
It reads the stage call parsed (``Invocation.args``, the stage's own parser: every spelling of a flag,
the config's defaults). w4tui/runs/start.py runs ``check`` before each start (the CLI, the TUI and the
night start stages through it) unless the run is forced; a refusal is a ``RunError`` that says what
would make it fit.
"""

from __future__ import annotations

import json
import os
import re
from argparse import Namespace
from collections.abc import Callable
from dataclasses import astuple, replace
from pathlib import Path

from core.config import Config
from core.errors import RunError
from core.events import EventWriter
from core.ollama.client import host
from core.specs import BY_NAME, Invocation, default_args
from core.train_backend import PIP_LINE
from core.units import gb

from . import estimate as est
from .probe import TRAIN_MODULE, Probe

MARGIN = 1_000_000_000  # disk kept free beyond the estimate
GGUF_BYTES_PER_PARAM = {"F16": 2.0, "Q4_K_M": 0.6, "Q4_K_S": 0.57, "Q5_K_M": 0.71, "Q6_K": 0.82, "Q8_0": 1.07}


def check(config: Config, inv: Invocation, *, probe: Probe | None = None) -> list[str]:
    """Raise ``RunError`` (figures, and the setting that would fit) when ``inv`` cannot succeed on this
    machine; return warnings that do not stop it. A call the stage refuses (``inv.args`` None) is left
    to the stage, which says what is wrong in its own words."""
    if inv.args is None:
        return []
    probe = probe or Probe(config)
    stage, args = inv.spec.name, inv.args
    problems = [
        p
        for p in (_disk(config, stage, args, probe), *(_training(config, args, probe) if stage == "train" else ()))
        if p
    ]
    if problems:
        # The hint names the config in use: the command is pasted into another shell.
        raise RunError("; ".join(problems) + f" (to start it anyway: {config.cli} run {stage} --force)")
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

    writer = EventWriter(run.stage, run.events_path, run.id)
    try:
        for text in warnings:
            writer.log(text, level="warning", source="preflight")
    finally:
        writer.close()


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _disk(config, stage: str, args: Namespace, probe: Probe) -> str | None:
    if stage == "deploy":
        return _ollama_disk(config, args, probe)
    output = getattr(args, "output", None)
    if output is None:
        return None
    out = Path(output)
    need, what = _disk_need(config, stage, args, out)
    if need is None:
        return None
    have = _tree_size(out)
    # A download lands in the Hugging Face cache (the output gets hard links to it) and fetches only what
    # is missing; any other output is replaced, and the old one stays until the new one is renamed in.
    where = _hub_cache() if stage == "download" and not Path(args.repo).is_dir() else out
    need = max(0, need - have) if stage == "download" else need + have
    free = probe.free_disk(where)
    if need + MARGIN <= free:
        return None
    fix = "set HF_HUB_CACHE to a bigger disk" if where != out else "point [paths] outputs at a bigger disk"
    return (
        f"not enough disk for {stage}: it writes ~{gb(need)} ({what}) and keeps {gb(MARGIN)} free, "
        f"but {gb(free)} is free at {where if where != out else out.parent}; free some space or {fix}"
    )


def _hub_cache() -> Path:
    """Where huggingface_hub puts downloads (its constants, without importing it into the TUI process)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def _ollama_disk(config, args: Namespace, probe: Probe) -> str | None:
    """A deploy copies the GGUF into a local Ollama's blob store (OLLAMA_MODELS, else ~/.ollama/models)."""
    gguf = args.gguf
    if not gguf.is_file() or not re.match(r"https?://(127\.0\.0\.1|localhost|\[::1\])[:/]", host(config) + "/"):
        return None  # nothing to copy, or a server whose disk is not this one
    store = Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")
    need, free = gguf.stat().st_size, probe.free_disk(store)
    if need + MARGIN <= free:
        return None
    return (
        f"not enough disk for deploy: Ollama copies the {gb(need)} GGUF into {store} and {gb(MARGIN)} is kept "
        f"free, but {gb(free)} is free there; free some space (ollama rm an old build) or set OLLAMA_MODELS"
    )


def _disk_need(config, stage: str, args: Namespace, out: Path) -> tuple[int | None, str]:
    if stage == "download":
        if Path(args.repo).is_dir():
            return _tree_size(Path(args.repo)), f"a copy of {args.repo}"
        if args.repo in est.KNOWN_REPOS:
            return est.KNOWN_REPOS[args.repo].params * 2, "a 7B model in bf16, 2 bytes/param"
        return None, ""
    if stage == "train":
        lora = est.lora_params(_shape(args), args.lora_r, args.target_modules)
        return lora * (4 + 2 * est.LORA_BYTES_PER_PARAM), "the adapter and two checkpoints with optimizer state"
    if stage == "merge":
        return _tree_size(args.base_model), "a merged copy of the base model"
    if stage == "convert":
        kind = args.outtype
        if kind in GGUF_BYTES_PER_PARAM and kind != "F16":  # quantized in one pass: no F16 on disk
            ratio = GGUF_BYTES_PER_PARAM[kind] / GGUF_BYTES_PER_PARAM["F16"]
            return round(_tree_size(args.model) * ratio), f"a {kind} GGUF ~{GGUF_BYTES_PER_PARAM[kind]} bytes/param"
        return _tree_size(args.model), "an F16 GGUF, ~2 bytes/param"
    if stage == "quantize":
        kind = args.type
        ratio = GGUF_BYTES_PER_PARAM.get(kind, 1.07) / GGUF_BYTES_PER_PARAM["F16"]
        return round(_tree_size(args.input) * ratio), f"{kind} ~{GGUF_BYTES_PER_PARAM.get(kind, 1.07)} bytes/param"
    return None, ""


def _shape(args: Namespace) -> est.ModelShape:
    try:
        return est.ModelShape.from_config(json.loads((args.base_model / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return est.QWEN25_7B  # not downloaded yet: the model the config names by default


def _settings(args: Namespace) -> tuple[int, int, bool]:
    """(max_seq_length, batch_size, gradient checkpointing) of a training."""
    return args.max_seq_length, args.batch_size, args.gradient_checkpointing


def _unreadable_base(base: Path) -> str | None:
    """A base model that cannot be read, said with why (another training's estimate); else None."""
    try:
        est.ModelShape.from_config(json.loads((base / "config.json").read_text(encoding="utf-8")))
    except OSError as exc:
        return f"{base} cannot be read ({exc.strerror or exc})"
    except (ValueError, KeyError, TypeError):
        return f"{base}/config.json is not a model config"
    return None


def _backend(config, args: Namespace, probe: Probe) -> tuple[str, int]:
    """(the trainer a training gets, its base's bits: 4/8 for mlx QLoRA, else 0)."""
    backend = probe.backend(args.backend)
    bits = (config.train.quantize_base if args.quantize_base is None else args.quantize_base) if backend == "mlx" else 0
    return backend, bits


def _needs(
    args: Namespace, device: str, backend: str = "torch", bits: int = 0
) -> Callable[[int, int, bool], est.TrainingMemory]:
    """The estimate for a training's model and LoRA settings, as a function of (seq, batch, checkpointing)."""
    dtype = mem_dtype(device)
    shape, targets, r = _shape(args), args.target_modules, args.lora_r
    # CUDA's SDPA kernels and mlx's fused attention never hold the s x s scores
    fused = device == "cuda" or backend == "mlx"

    def need(s: int, b: int, c: bool) -> est.TrainingMemory:
        return est.training_memory(shape, dtype, s, b, c, r, targets, fused_attention=fused, quantize_bits=bits)

    return need


def ollama_can_stay(config, inv: Invocation, probe: Probe | None = None) -> bool:
    """An mlx training whose estimate fits in what is free now (Ollama's model still loaded) and in
    Metal's working set leaves the served model up; any other training has Ollama unload first."""
    if inv.args is None:
        return False
    probe = probe or Probe(config)
    args = inv.args
    backend, bits = _backend(config, args, probe)
    if backend != "mlx":
        return False
    device, free, total, _ = probe.memory(args.device)
    if free is None:
        return False
    ceiling = probe.working_set(total)
    need = _needs(args, device, backend, bits)(*_settings(args)).total
    return need <= (free if ceiling is None else min(free, ceiling))


def _other(config, typed: list[str]) -> Namespace | None:
    """Another training's arguments, read as `w4tui run train -- ARGS` would: over this config's defaults
    (a training started by hand need not name them all); None when they do not parse."""
    return BY_NAME["train"].invoke(config, default_args("train", config, None, "other") + typed).args


def _training(config, args: Namespace, probe: Probe) -> list[str]:
    problems = []
    device, free, total, where = probe.memory(args.device)
    seq, batch, ckpt = _settings(args)
    backend, bits = _backend(config, args, probe)
    need = _needs(args, device, backend, bits)
    mem = need(seq, batch, ckpt)
    others = probe.trainings()
    if others:
        # Trainings share the machine's memory: another one running refuses this one when together they
        # cannot fit (two 7B runs on a 32 GB Mac never can), or when the memory cannot be told.
        other, unknown = 0, []
        for pid, argv in others:
            typed = argv[argv.index(TRAIN_MODULE) + 1 :] if TRAIN_MODULE in argv else []
            named = BY_NAME["train"].given(config, typed).get("base_model")
            unreadable = _unreadable_base(named) if named is not None else None
            if unreadable:  # its base is gone (a deleted workspace): not the default 7B, but what it holds now
                held = probe.resident(pid) if hasattr(probe, "resident") else 0
                unknown.append(f"pid {pid}: its base model {unreadable}; counted at the {gb(held)} it holds now")
                other += held
                continue
            if (other_args := _other(config, typed)) is None:
                continue  # not a command line the stage would run: not a training to count
            other_backend, other_bits = _backend(config, other_args, probe)
            other += _needs(other_args, device, other_backend, other_bits)(*_settings(other_args)).total
        if total is None or other + mem.total > total:
            size = f" of {gb(total)}" if total else ""
            which = f" ({'; '.join(unknown)})" if unknown else ""
            problems.append(
                f"another training is running on this machine (pid {others[0][0]}, ~{gb(other)}){which}: with this "
                f"one (~{gb(mem.total)}) it does not fit in the memory{size}; wait for it or cancel it"
            )
    ranks = args.gpus
    gpus = probe.gpus() if device == "cuda" and hasattr(probe, "gpus") else []
    if gpus:  # every GPU the group will use holds the base (ddp) or its share (fsdp), and its activations
        fsdp = replace(mem, weights=est.sharded_weight_bytes(_shape(args), mem_dtype(device), ranks))
        if ranks > 1 and args.shard == "fsdp":
            return problems + _per_gpu(gpus, ranks, fsdp, probe.ollama_loaded(on_gpu=True), "fsdp")
        return problems + _per_gpu(gpus, ranks, mem, probe.ollama_loaded(on_gpu=True), fits=fsdp if ranks > 1 else None)
    if free is None:
        return problems  # nothing to compare with: no refusal on a guess
    ollama = probe.ollama_loaded(on_gpu=device == "cuda")
    if ranks > 1 and device != "cuda":  # ranks as processes: each holds its own copy of the base
        mem = est.TrainingMemory(*(ranks * v for v in astuple(mem)))
    ceiling = probe.working_set(total)  # Apple Silicon: the GPU's share of the unified memory
    available = free + ollama if ceiling is None else min(free + ollama, ceiling)
    if mem.total <= available:
        return problems
    fix = _what_fits(need, seq, batch, ckpt, available)
    if backend == "torch" and ceiling is not None and probe.backend("mlx") == "mlx":
        qlora = _needs(args, device, "mlx", 4)(seq, batch, ckpt).total
        if qlora <= available:
            fix = f"it fits with --backend mlx --quantize_base 4 (~{gb(qlora)}); or {fix.removeprefix('it ')}"
    elif backend == "torch" and ceiling is not None:
        fix += f"; mlx's 4-bit QLoRA needs far less: {train_backend_pip()}"
    precision = f"{bits}-bit" if bits else mem_dtype(device)
    limit = f", Metal's working set {gb(ceiling)}" if ceiling is not None else ""
    problems.append(
        f"train needs ~{gb(mem.total)} of memory ({backend}: base weights {gb(mem.weights)} {precision}, LoRA + "
        f"AdamW {gb(mem.lora)}, activations {gb(mem.activations)} for {seq} tokens x {batch} "
        f"{'with' if ckpt else 'without'} gradient checkpointing, {gb(mem.overhead)} overhead) but "
        f"{gb(available)} is available ({gb(free)} {where} + {gb(ollama)} Ollama will unload{limit}); {fix}"
    )
    return problems


def _per_gpu(gpus: list, ranks: int, mem: est.TrainingMemory, ollama: int, shard: str = "ddp", fits=None) -> list[str]:
    """``fits``: the fsdp estimate of a ddp run, offered when it fits where ddp does not."""
    if len(gpus) < ranks:
        return [f"--gpus {ranks} needs {ranks} GPUs but this machine has {len(gpus)}; lower --gpus ([train] gpus)"]
    # Ollama's models are unloaded before a training; where they sit is not told: count them once.
    free = [(gpu.total or 0) - (gpu.in_use or 0) + (ollama if index == 0 else 0) for index, gpu in enumerate(gpus)]
    short = [f"GPU {i} ({gpus[i].name}) has {gb(free[i])} free" for i in range(ranks) if mem.total > free[i]]
    if not short:
        return []
    fix = "lower --batch_size or --max_seq_length, or use --gradient_checkpointing"
    if fits is not None and all(fits.total <= f for f in free[:ranks]):
        fix = f"it fits with --shard fsdp (1/{ranks} of the base on each GPU, ~{gb(fits.total)}); or {fix}"
    share = f" (1/{ranks} + the layer in use, fsdp)" if shard == "fsdp" else ""
    return [
        f"train needs ~{gb(mem.total)} on each of {ranks} GPU{'s' if ranks > 1 else ''} (base weights "
        f"{gb(mem.weights)}{share}, LoRA + AdamW {gb(mem.lora)}, activations {gb(mem.activations)}) but "
        + ", ".join(short)
        + f"; {fix}"
    ]


def train_backend_pip() -> str:
    return PIP_LINE


def mem_dtype(device: str) -> str:
    return "float32" if device == "cpu" else "bfloat16"


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
