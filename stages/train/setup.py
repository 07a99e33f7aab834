"""Put a training run together: data, model, adapter, optimizer, resume; then save the result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from core import eta, units
from core.config import load_config
from core.errors import StageError
from core.events import EventWriter
from core.fsutil import atomic_write_text, fsync_dir
from stages.train import checkpoint, distributed, loop, selection
from stages.train.callbacks import CallbackList, EventsCallback, LogLineCallback
from stages.train.checkpoint import TrainState
from stages.train.device import detect
from stages.train.loop import LoopConfig, Training, run, total_steps

RECORD = "training_run.json"
MICRO = "micro_batches_per_step"  # ranks x gradient_accumulation
# Flags that change what an exact resume would compute; a resume with other values is refused.
TRAJECTORY = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "epochs",
    "learning_rate",
    "max_seq_length",
    "overlong",
    "batch_size",
    "gradient_accumulation",
    "batching",
    "eval_fraction",
    "seed",
    "replay",
    "resume_from",
    "profile",
    "backend",  # a checkpoint is one backend's (optimizer state, base precision)
    "quantize_base",
)


def train(args, events: EventWriter) -> dict:
    import torch
    from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

    try:
        precision = detect(args.device)
    except ValueError as exc:
        raise StageError(str(exc), hint="use --device auto") from None
    group = distributed.join(precision.device)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    cache = load_config(None).paths.state / "cache" / "tokenized" if args.cache else None
    log = lambda message: events.log(message, level="warning")  # noqa: E731
    # profile, replay and eval split in one place: the eval stage rebuilds the same split from the record
    with distributed.main_first(group):  # rank 0 fills the tokenized cache, the others read it
        chosen = selection.select(args, tokenizer, cache, log)
    for note in chosen.notes:
        events.log(note)
    report, replayed, replay_files = chosen.report, chosen.replayed, chosen.replay_files
    train_samples, eval_samples = chosen.train, chosen.eval
    data_key = hashlib.sha256(json.dumps([report.files, report.tokens, replay_files, replayed]).encode()).hexdigest()[
        :16
    ]
    settings = {name: _plain(getattr(args, name)) for name in TRAJECTORY}
    # What a step is made of, whatever the number of ranks: a resume on other ranks continues exactly.
    settings[MICRO] = args.gradient_accumulation * group.world
    resume_at = _resume_point(args, data_key, settings) if args.resume else None
    # The ETA before starting: the rate an earlier run on this device with these settings measured
    cost = eta.cost_key(
        {k: _plain(getattr(args, k)) for k in ("base_model", "gpus", "nnodes", *eta.COST_ARGS)},
        precision.device,
        precision.dtype,
    )
    tokens_to_train = round(sum(len(s.ids) for s in train_samples) * args.epochs)
    measured = eta.previous_rate(args.output.parent, cost, exclude=args.output)
    predicted = (
        eta.estimate(tokens_to_train, measured[0], f"measured by {Path(measured[1]).name}") if measured else None
    )
    if args.eta and predicted:
        return _report_eta(predicted, events)

    model = _model(args, precision, torch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=0.0)
    cfg = LoopConfig(
        args.epochs,
        args.batch_size,
        settings[MICRO],  # the global step: the schedule and the batch order follow it
        args.seed,
        args.log_every,
        args.checkpoint_every,
        args.batching,
    )
    _, total = total_steps(len(train_samples), cfg)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, round(total * 0.03)), total)
    scaler = torch.amp.GradScaler(precision.device) if precision.grad_scaler else None

    state = TrainState(data_key=data_key, settings=settings)
    if resume_at:
        state = checkpoint.load(resume_at, model, optimizer, scheduler, scaler)
        events.log(f"resuming from {resume_at.name} (step {state.step} of {total})")
    group.wrap(model, precision.device)
    global_batch = args.batch_size * settings[MICRO]
    if group.world > 1:
        events.log(
            f"{group.world} ranks x batch {args.batch_size} x accumulation {args.gradient_accumulation}"
            f" = global batch {global_batch}"
        )
    events.log(
        f"{len(train_samples)} train / {len(eval_samples)} eval samples, {report.tokens} tokens, "
        f"{total} steps on {precision.device} ({precision.dtype} base, fp32 LoRA)"
    )
    if args.eta:  # no earlier run to go by: a few steps on the real model, then stop
        from stages.train.calibrate import STEPS, calibrate

        rate = calibrate(
            model, optimizer, scheduler, scaler, train_samples, cfg, precision.device, tokenizer.pad_token_id or 0
        )
        return _report_eta(eta.estimate(tokens_to_train, rate, f"calibrated on {STEPS} steps"), events)
    if predicted:
        predicted = eta.estimate(
            round(tokens_to_train * (1 - state.step / total)), predicted["rate"], predicted["source"]
        )
        events.log(f"ETA: {predicted['text']}")
    started = time.time()
    training = Training(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        samples=train_samples,
        eval_samples=eval_samples,
        state=state,
        cfg=cfg,
        output=args.output,
        device=precision.device,
        pad_id=tokenizer.pad_token_id or 0,
        group=group,
    )
    result = run(training, CallbackList([EventsCallback(events), LogLineCallback()]))
    parent = str(args.resume_from.resolve()) if args.resume_from else str(args.base_model.resolve())
    # nightly: the loss on the slice of the main dataset no run trains on, so forgetting shows night by night
    main_eval = loop.evaluate(model, chosen.main_eval, cfg, tokenizer.pad_token_id or 0, precision.device, group)
    group.close()
    if not group.is_main:
        return {}  # rank 0 writes the adapter and the record
    if main_eval is not None:
        events.metrics(main_eval_loss=round(main_eval, 6), main_eval_samples=len(chosen.main_eval))
    train_tokens = int(sum(len(s.ids) for s in train_samples))
    counts = {
        "train_samples": len(train_samples),
        "train_tokens": train_tokens,
        "eval_samples": len(eval_samples),
        "replayed": replayed,
        "replay_data": replay_files,
        "main_eval_loss": main_eval,
        "main_eval_samples": len(chosen.main_eval),
        "device": precision.device,
        "base_dtype": precision.dtype,
        "ranks": group.world,
        "global_batch": global_batch,
        "backend": "torch",
        "base_precision": precision.dtype,
        "eta": eta.outcome(predicted, result["train_seconds"]),
    }
    if predicted:
        events.log(
            f"the ETA was {units.rough_duration(predicted['eta_s'])}; it took {units.rough_duration(result['train_seconds'])}"
        )
    _save_adapter(model, args, report, result, counts, parent, started, state.losses)
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
        "replayed": replayed,
        "train_seconds": result["train_seconds"],
        "tokens_per_second": result["tokens_per_second"],
        "backend": "torch",
        "base_precision": precision.dtype,
    }


def _report_eta(predicted: dict, events: EventWriter) -> dict:
    """--eta: say how long the run would take, and train nothing."""
    events.log(f"ETA: {predicted['text']}")
    print(f"ETA: {predicted['text']}", flush=True)
    return {
        "eta_s": predicted["eta_s"],
        "eta_text": predicted["text"],
        "tokens": predicted["tokens"],
        "tokens_per_second": predicted["rate"],
        "eta_source": predicted["source"],
    }


def _plain(value):
    return str(value.resolve()) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def _resume_point(args, data_key: str, settings: dict) -> Path:
    """The checkpoint to continue from, refused (before any model loads) unless the run would be the same."""
    found = checkpoint.latest(args.output)
    if found is None:
        raise StageError(f"{args.output}: no checkpoint to resume from", hint="start without --resume")
    saved = checkpoint.read_state(found)
    if saved.data_key != data_key:
        raise StageError(
            f"{found}: was trained on other data than {args.dataset}; cannot resume exactly",
            hint="use the same --dataset, or start a new run in another --output",
        )
    # A checkpoint that knows its step's micro-batches (ranks x accumulation) is compared on that,
    # so 2 ranks x 4 resume as 1 rank x 8; an older one on --gradient_accumulation itself.
    keys = [k for k in TRAJECTORY if not (k == "gradient_accumulation" and MICRO in saved.settings)] + [MICRO]
    changed = [k for k in keys if k in saved.settings and saved.settings[k] != settings[k]]
    if changed:
        was = ", ".join(
            f"ranks x --gradient_accumulation = {saved.settings[k]}" if k == MICRO else f"--{k} {saved.settings[k]}"
            for k in changed
        )
        raise StageError(
            f"{found}: was trained with {was}; cannot resume exactly with other values",
            hint="resume with the same flags, or start a new run in another --output",
        )
    return found


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
        # LoRA weights load as fp32 whatever the base dtype (autocast_adapter_dtype, PEFT's default).
        return PeftModel.from_pretrained(base, args.resume_from, is_trainable=True)
    present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
    missing = [m for m in args.target_modules if m not in present]
    if missing:
        raise StageError(
            f"target modules not in this model: {', '.join(missing)}",
            hint="check [train] target_modules (Qwen2: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)",
        )
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(args.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config)


def _save_adapter(model, args, report, result, counts: dict, parent: str, started: float, losses: list) -> None:
    """Write the adapter beside the checkpoints without ever showing a half-written one: files are
    complete and synced before their rename, and adapter_config.json (what marks a directory as an
    adapter) arrives after the weights; the run record comes last."""
    output: Path = args.output
    staging = output / ".final.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        with open(staging / name, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(staging / name, output / name)
    fsync_dir(output)
    shutil.rmtree(staging, ignore_errors=True)
    record = {
        "args": {k: _plain(v) for k, v in vars(args).items()},
        "base_model": str(args.base_model.resolve()),
        **_base_info(args.base_model),
        "parent": parent,
        "data": report.files,
        "samples": report.samples,
        "tokens": report.tokens,
        "label_tokens": report.label_tokens,
        "truncated": report.truncated,
        "dropped": report.dropped,
        "skipped": report.skipped,
        **counts,
        "final_loss": result["loss"],
        "eval_loss": result["eval_loss"],
        "steps": result["steps"],
        "train_seconds": result["train_seconds"],
        "train_cpu_seconds": result["train_cpu_seconds"],
        "tokens_per_second": result["tokens_per_second"],
        "started": started,
        "ended": time.time(),
        "loss_history": losses,
    }
    atomic_write_text(output / RECORD, json.dumps(record, indent=1) + "\n")


def _base_info(base: Path) -> dict:
    """Base model name and revision, from the download record when there is one."""
    marker = base / ".w4tui-download.json"
    try:  # what `w4tui adapter import` checks an adapter from another machine against
        arch = {"architecture": (json.loads((base / "config.json").read_text()).get("architectures") or [None])[0]}
    except (OSError, ValueError, AttributeError):
        arch = {"architecture": None}
    try:
        info = json.loads(marker.read_text())
        return {
            **arch,
            "base_repo": info.get("repo"),
            "base_revision": info.get("revision"),
            "base_commit": info.get("commit"),
        }
    except (OSError, ValueError, AttributeError):
        return {**arch, "base_repo": str(base.resolve()), "base_revision": None, "base_commit": None}
