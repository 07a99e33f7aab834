"""Put an mlx training run together: the torch backend's data selection, resume checks, ETA and run
record (setup.py), with mlx-lm's model, LoRA and quantization; the adapter is written in PEFT's layout."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import mlx.core as mx
from safetensors.numpy import load_file, save_file

from core import eta
from core.config import load_config
from core.errors import StageError
from core.events import EventWriter
from stages.train import selection, setup
from stages.train.callbacks import CallbackList, EventsCallback, LogLineCallback
from stages.train.checkpoint import TrainState
from stages.train.loop import LoopConfig, total_steps
from stages.train.mlx_backend import checkpoint, loop
from stages.train.mlx_backend.model import LoraSpec, add_lora, load_base, peft_tensors, precision_name, set_peft_tensors

CALIBRATION_STEPS = 3


def device_name() -> str:
    return "mlx-gpu" if mx.metal.is_available() else "mlx-cpu"


def train(args, events: EventWriter) -> dict:
    from transformers import AutoTokenizer  # the tokenizer only: the data pipeline is the torch backend's

    # bf16 base on Metal; float32 on the CPU, where bf16 is slow and inexact (the torch backend's rule)
    dtype = mx.bfloat16 if mx.metal.is_available() else mx.float32
    base_precision = precision_name(args.quantize_base, dtype)
    device = device_name()
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    cache = load_config(None).paths.state / "cache" / "tokenized" if args.cache else None
    chosen = selection.select(args, tokenizer, cache, lambda message: events.log(message, level="warning"))
    for note in chosen.notes:
        events.log(note)
    report, train_samples, eval_samples = chosen.report, chosen.train, chosen.eval
    data_key = hashlib.sha256(
        json.dumps([report.files, report.tokens, chosen.replay_files, chosen.replayed]).encode()
    ).hexdigest()[:16]
    settings = {name: setup._plain(getattr(args, name)) for name in setup.TRAJECTORY}
    resume_at = setup._resume_point(args, data_key, settings) if args.resume else None
    cost = eta.cost_key(
        {k: setup._plain(getattr(args, k)) for k in ("base_model", *eta.COST_ARGS)}, device, base_precision
    )
    tokens_to_train = round(sum(len(s.ids) for s in train_samples) * args.epochs)
    measured = eta.previous_rate(args.output.parent, cost, exclude=args.output)
    predicted = (
        eta.estimate(tokens_to_train, measured[0], f"measured by {Path(measured[1]).name}") if measured else None
    )
    if args.eta and predicted:
        return setup._report_eta(predicted, events)

    mx.random.seed(args.seed)  # LoRA's initial A
    spec = lora_spec(args)
    model = load_base(args.base_model, args.quantize_base, dtype)
    add_lora(model, spec)
    if args.gradient_checkpointing:  # mlx-lm's: each layer's activations are recomputed in the backward
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])
    if args.resume_from:
        set_peft_tensors(model, load_file(str(args.resume_from / "adapter_model.safetensors")), args.resume_from)
    cfg = LoopConfig(
        args.epochs,
        args.batch_size,
        args.gradient_accumulation,
        args.seed,
        args.log_every,
        args.checkpoint_every,
        args.batching,
    )
    _, total = total_steps(len(train_samples), cfg)
    schedule = loop.cosine_with_warmup(args.learning_rate, total)
    optimizer = loop.make_optimizer(schedule)
    state = TrainState(data_key=data_key, settings=settings)
    if resume_at:
        state = checkpoint.load(resume_at, model, optimizer)
        events.log(f"resuming from {resume_at.name} (step {state.step} of {total})")
    events.log(
        f"{len(train_samples)} train / {len(eval_samples)} eval samples, {report.tokens} tokens, "
        f"{total} steps on {device} (mlx, {base_precision} base, fp32 LoRA)"
    )
    pad_id = tokenizer.pad_token_id or 0
    training = loop.Training(
        model, optimizer, train_samples, eval_samples, state, cfg, args.output, device, pad_id, total, schedule
    )
    if args.eta:  # no earlier run to go by: a few real steps, then stop (nothing is saved)
        return setup._report_eta(
            eta.estimate(tokens_to_train, _calibrate(training), f"calibrated on {CALIBRATION_STEPS} steps"), events
        )
    if predicted:
        predicted = eta.estimate(
            round(tokens_to_train * (1 - state.step / total)), predicted["rate"], predicted["source"]
        )
        events.log(f"ETA: {predicted['text']}")
    started = time.time()
    result = loop.run(training, CallbackList([EventsCallback(events), LogLineCallback()]))
    parent = str(args.resume_from.resolve()) if args.resume_from else str(args.base_model.resolve())
    main_eval = loop.evaluate(model, chosen.main_eval, cfg, pad_id)
    if main_eval is not None:
        events.metrics(main_eval_loss=round(main_eval, 6), main_eval_samples=len(chosen.main_eval))
    train_tokens = int(sum(len(s.ids) for s in train_samples))
    counts = {
        "train_samples": len(train_samples),
        "train_tokens": train_tokens,
        "eval_samples": len(eval_samples),
        "replayed": chosen.replayed,
        "replay_data": chosen.replay_files,
        "main_eval_loss": main_eval,
        "main_eval_samples": len(chosen.main_eval),
        "device": device,
        "base_dtype": base_precision,
        "backend": "mlx",
        "base_precision": base_precision,
        "eta": eta.outcome(predicted, result["train_seconds"]),
    }
    if predicted:
        events.log(f"the ETA was {eta.duration(predicted['eta_s'])}; it took {eta.duration(result['train_seconds'])}")
    setup._save_adapter(
        _PeftWriter(model, spec, args.base_model), args, report, result, counts, parent, started, state.losses
    )
    events.artifact(
        args.output.resolve(),
        "adapter",
        parent=parent,
        base_model=str(args.base_model.resolve()),
        loss=result["loss"],
        eval_loss=result["eval_loss"],
        main_eval_loss=main_eval,
    )
    return {
        "final_loss": result["loss"],
        "eval_loss": result["eval_loss"],
        "main_eval_loss": main_eval,
        "steps": result["steps"],
        "samples": len(train_samples),
        "tokens": train_tokens,
        "truncated": report.truncated,
        "dropped": report.dropped,
        "skipped": report.skipped,
        "replayed": chosen.replayed,
        "train_seconds": result["train_seconds"],
        "tokens_per_second": result["tokens_per_second"],
        "backend": "mlx",
        "base_precision": base_precision,
    }


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
    """What setup._save_adapter asks of a model: ``save_pretrained(dir)`` writing PEFT's two files."""

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
    loop.step(t, groups[0], 0)
    started, tokens = time.monotonic(), 0
    for n, group in enumerate(groups[1:], start=1):
        tokens += loop.step(t, group, n)[2]
    if tokens == 0:  # one step's worth of data: time it again
        started = time.monotonic()
        tokens = loop.step(t, groups[0], 1)[2]
    return tokens / max(time.monotonic() - started, 1e-9)
