"""An mlx training run: mlx-lm's model, LoRA and quantization, mlx's AdamW and schedule, the checkpoint
restored, the adapter written in PEFT's layout; the rest (data, resume checks, ETA, the loop, the run
record) is setup.py's, as for torch, and torch itself is never loaded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlx.core as mx
from safetensors.numpy import load_file, save_file

from core.errors import StageError
from core.events import EventWriter
from stages.train import setup
from stages.train.mlx_backend import checkpoint, loop
from stages.train.mlx_backend.model import LoraSpec, add_lora, load_base, peft_tensors, precision_name, set_peft_tensors

CALIBRATION_STEPS = 3


def device_name() -> str:
    return "mlx-gpu" if mx.metal.is_available() else "mlx-cpu"


def train(args, events: EventWriter) -> dict:
    # bf16 base on Metal; float32 on the CPU, where bf16 is slow and inexact (the torch backend's rule)
    dtype = mx.bfloat16 if mx.metal.is_available() else mx.float32
    base_precision = precision_name(args.quantize_base, dtype)
    plan = setup.plan(args, events, device_name(), base_precision)
    if args.eta and plan.predicted:
        return plan.eta_report()

    mx.random.seed(args.seed)  # LoRA's initial A
    spec = lora_spec(args)
    model = load_base(args.base_model, args.quantize_base, dtype)
    add_lora(model, spec)
    if args.gradient_checkpointing:  # mlx-lm's: each layer's activations are recomputed in the backward
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])
    if args.resume_from:
        set_peft_tensors(model, load_file(str(args.resume_from / "adapter_model.safetensors")), args.resume_from)
    cfg, total = plan.loop_config()
    schedule = loop.cosine_with_warmup(args.learning_rate, total)
    optimizer = loop.make_optimizer(schedule)
    state = plan.state(total, lambda path: checkpoint.load(path, model, optimizer))
    plan.describe(total, f"mlx, {base_precision} base, fp32 LoRA")
    chosen = plan.chosen
    training = loop.Training(
        model,
        optimizer,
        chosen.train,
        chosen.eval,
        state,
        cfg,
        args.output,
        plan.device,
        plan.pad_id,
        schedule=schedule,
    )
    if args.eta:  # no earlier run to go by: a few real steps, then stop (nothing is saved)
        return plan.eta_report((_calibrate(training), f"calibrated on {CALIBRATION_STEPS} steps"))
    result, main_eval = plan.train(training, total)
    return plan.finish(training, result, main_eval, _PeftWriter(model, spec, args.base_model), "mlx")


def lora_spec(args) -> LoraSpec:
    """The LoRA shape: the flags', or with --resume_from the adapter's own (as PEFT does for torch)."""
    if not args.resume_from:
        return LoraSpec(args.lora_r, args.lora_alpha, args.lora_dropout, tuple(args.target_modules))
    path = args.resume_from / "adapter_config.json"
    config = json.loads(path.read_text())
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets:
        raise StageError(f"{path}: target_modules is {targets!r}; mlx continues adapters that list their modules")
    for key in ("rank_pattern", "alpha_pattern", "layers_to_transform", "modules_to_save"):
        if config.get(key):
            raise StageError(f"{path}: {key} is set; the mlx backend trains one LoRA shape on every layer")
    try:
        return LoraSpec(
            int(config["r"]),
            float(config["lora_alpha"]),
            float(config.get("lora_dropout") or 0.0),
            tuple(targets),
            bool(config.get("use_rslora")),
        )
    except (KeyError, TypeError, ValueError):
        raise StageError(f"{path}: r or lora_alpha missing or not a number", hint="the adapter is damaged") from None


class _PeftWriter:
    """What setup's Plan.finish asks of a model: ``save_pretrained(dir)`` writing PEFT's two files."""

    def __init__(self, model, spec: LoraSpec, base: Path) -> None:
        self.model, self.spec, self.base = model, spec, base

    def save_pretrained(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(peft_tensors(self.model), str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
        (directory / "adapter_config.json").write_text(json.dumps(peft_config(self.spec, self.base), indent=2) + "\n")


def peft_config(spec: LoraSpec, base: Path) -> dict:
    """adapter_config.json as PEFT writes it for a plain LoRA (the keys merge, PEFT and llama.cpp read)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base.resolve()),
        "r": spec.r,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": sorted(spec.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": spec.rslora,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def _calibrate(t: loop.Training) -> float:
    """Tokens/s over a few real steps (the first is left out: it includes mlx's graph warm-up)."""
    import numpy as np

    from stages.train.batches import epoch_batches

    lengths = np.array([len(s.ids) for s in t.samples])
    batches = epoch_batches(lengths, t.cfg.batch_size, t.cfg.seed, 0, t.cfg.batching)
    acc = t.cfg.accumulation
    groups = [batches[i : i + acc] for i in range(0, len(batches), acc)][: CALIBRATION_STEPS + 1]
    t.step(groups[0], 0)
    started, tokens = time.monotonic(), 0
    for n, group in enumerate(groups[1:], start=1):
        tokens += t.step(group, n)[2]
    if tokens == 0:  # one step's worth of data: time it again
        started = time.monotonic()
        tokens = t.step(groups[0], 1)[2]
    return tokens / max(time.monotonic() - started, 1e-9)
