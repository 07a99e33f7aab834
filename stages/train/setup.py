"""Put a training run together: data, model, adapter, optimizer, resume; then save the result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from stages._stage import StageError, stage_config
from stages.train import checkpoint
from stages.train.checkpoint import TrainState
from stages.train.device import detect
from stages.train.loop import LoopConfig, run, total_steps
from stages.train.tokenized import load_samples
from w4tui.events import EventWriter

RECORD = "training_run.json"


def train(args, events: EventWriter) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

    try:
        precision = detect(args.device)
    except ValueError as exc:
        raise StageError(str(exc), hint="use --device auto") from None
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    cache = stage_config().paths.state / "cache" / "tokenized" if args.cache else None
    log = lambda message: events.log(message, level="warning")  # noqa: E731
    samples, report = load_samples(args.dataset, tokenizer, args.max_seq_length, args.overlong, args.skip_bad, cache, log)
    replayed = 0
    if args.replay > 0:
        samples, replayed = _mix_replay(args, samples, tokenizer, cache, log)
    from stages.train.batches import split_eval

    train_idx, eval_idx = split_eval(len(samples), args.eval_fraction, args.seed)
    train_samples, eval_samples = [samples[i] for i in train_idx], [samples[i] for i in eval_idx]
    data_key = hashlib.sha256(json.dumps([report.files, report.tokens, replayed]).encode()).hexdigest()[:16]

    model = _model(args, precision, torch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=0.0)
    cfg = LoopConfig(args.epochs, args.batch_size, args.gradient_accumulation, args.seed, args.log_every,
                     args.checkpoint_every)
    _, total = total_steps(len(train_samples), cfg)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, round(total * 0.03)), total)
    scaler = torch.amp.GradScaler(precision.device) if precision.grad_scaler else None

    state = TrainState(data_key=data_key)
    if args.resume:
        found = checkpoint.latest(args.output)
        if found is None:
            raise StageError(f"{args.output}: no checkpoint to resume from", hint="start without --resume")
        state = checkpoint.load(found, model, optimizer, scheduler, scaler, precision.device)
        if state.data_key != data_key:
            raise StageError(f"{found}: was trained on other data than {args.dataset}; cannot resume exactly",
                             hint="use the same --dataset, or start a new run in another --output")
        events.log(f"resuming from {found.name} (step {state.step} of {total})")
    events.log(f"{len(train_samples)} train / {len(eval_samples)} eval samples, {report.tokens} tokens, "
               f"{total} steps on {precision.device} ({precision.dtype} base, fp32 LoRA)")
    started = time.time()
    result = run(model, optimizer, scheduler, scaler, train_samples, eval_samples, state, cfg, args.output,
                 precision.device, tokenizer.pad_token_id or 0, events)
    parent = str(args.resume_from.resolve()) if args.resume_from else str(args.base_model.resolve())
    counts = {"train_samples": len(train_samples), "eval_samples": len(eval_samples), "replayed": replayed}
    _save_adapter(model, args, report, result, counts, parent, started)
    events.artifact(args.output.resolve(), "adapter", parent=parent, base_model=str(args.base_model.resolve()),
                    loss=result["loss"], eval_loss=result["eval_loss"])
    return {"final_loss": result["loss"], "eval_loss": result["eval_loss"], "steps": result["steps"],
            "samples": len(train_samples), "tokens": report.tokens, "truncated": report.truncated,
            "dropped": report.dropped, "skipped": report.skipped, "replayed": replayed}


def _model(args, precision, torch):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, precision.dtype)
    try:
        base = AutoModelForCausalLM.from_pretrained(args.base_model, dtype=dtype).to(precision.device)
    except (OSError, ValueError) as exc:
        raise StageError(f"{args.base_model}: cannot load the model: {str(exc).splitlines()[0]}") from None
    base.config.use_cache = False
    if args.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.resume_from:
        return PeftModel.from_pretrained(base, args.resume_from, is_trainable=True)
    present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
    missing = [m for m in args.target_modules if m not in present]
    if missing:
        raise StageError(f"target modules not in this model: {', '.join(missing)}",
                         hint="check [train] target_modules (Qwen2: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)")
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=list(args.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def _mix_replay(args, samples, tokenizer, cache, log):
    """Add ``replay`` share of samples drawn from the main dataset (seeded) to limit forgetting."""
    source = args.replay_dataset or stage_config().paths.data
    main, _ = load_samples(source, tokenizer, args.max_seq_length, args.overlong, args.skip_bad, cache, log)
    want = min(len(main), round(len(samples) * args.replay / (1 - args.replay)))
    picks = np.random.default_rng([args.seed, 1]).choice(len(main), size=want, replace=False)
    return samples + [main[i] for i in picks], want


def _save_adapter(model, args, report, result, counts: dict, parent: str, started: float) -> None:
    """Adapter files land under their final names only once complete; the record is written last."""
    output: Path = args.output
    staging = output / ".final.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        os.replace(staging / name, output / name)
    shutil.rmtree(staging, ignore_errors=True)
    base_info = _base_info(args.base_model)
    record = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "base_model": str(args.base_model.resolve()), **base_info, "parent": parent,
              "data": report.files, "samples": report.samples, "tokens": report.tokens,
              "label_tokens": report.label_tokens, "truncated": report.truncated, "dropped": report.dropped,
              "skipped": report.skipped, **counts, "final_loss": result["loss"],
              "eval_loss": result["eval_loss"], "steps": result["steps"],
              "started": started, "ended": time.time()}
    from w4tui.fsutil import atomic_write_text

    atomic_write_text(output / RECORD, json.dumps(record, indent=2) + "\n")


def _base_info(base: Path) -> dict:
    """Base model name and revision, from the download record when there is one."""
    marker = base / ".w4tui-download.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        return {"base_repo": info.get("repo"), "base_revision": info.get("revision"), "base_commit": info.get("commit")}
    return {"base_repo": str(base), "base_revision": None, "base_commit": None}
