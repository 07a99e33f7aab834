"""A torch training run (PEFT on CUDA, MPS or the CPU, one rank or a torchrun group): the precision, the
model with its LoRA, AdamW and the cosine schedule, the checkpoint restored; the rest is setup.py's."""

from __future__ import annotations

from core import units
from core.errors import StageError
from core.events import EventWriter
from stages.train import checkpoint, distributed, setup
from stages.train.device import detect
from stages.train.loop import Training


def train(args, events: EventWriter) -> dict:
    import torch
    from transformers import get_cosine_schedule_with_warmup

    try:
        precision = detect(args.device)
    except ValueError as exc:
        raise StageError(str(exc), hint="use --device auto") from None
    group = distributed.join(precision.device, args.shard)
    torch.manual_seed(args.seed)
    plan = setup.plan(
        args, events, precision.device, precision.dtype, group.world, lambda: distributed.main_first(group)
    )
    if args.eta and plan.predicted:
        return plan.eta_report()

    model = _model(args, precision, torch, group.load_device(precision.device))
    group.wrap(model, precision.device)  # before the optimizer holds the LoRA weights: fsdp moves them
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=0.0)
    cfg, total = plan.loop_config()
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, round(total * 0.03)), total)
    scaler = torch.amp.GradScaler(precision.device) if precision.grad_scaler else None
    state = plan.state(total, lambda path: checkpoint.load(path, model, optimizer, scheduler, scaler))
    global_batch = args.batch_size * cfg.accumulation
    if group.world > 1:
        events.log(
            f"{group.world} ranks x batch {args.batch_size} x accumulation {args.gradient_accumulation}"
            f" = global batch {global_batch}; {_shard_note(group, model)}"
        )
    elif args.shard == "fsdp" and not args.eta:
        events.log("--shard fsdp on one rank: nothing to shard, a plain run (the base must fit this device)")
    plan.describe(total, f"{precision.dtype} base, fp32 LoRA")
    if args.eta:  # no earlier run to go by: a few steps on the real model, then stop
        from stages.train.calibrate import STEPS, calibrate

        rate = calibrate(model, optimizer, scheduler, scaler, plan.chosen.train, cfg, precision.device, plan.pad_id)
        return plan.eta_report((rate, f"calibrated on {STEPS} steps"))
    training = Training(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        samples=plan.chosen.train,
        eval_samples=plan.chosen.eval,
        state=state,
        cfg=cfg,
        output=args.output,
        device=precision.device,
        pad_id=plan.pad_id,
        group=group,
    )
    result, main_eval = plan.train(training, total)
    group.close()
    if not group.is_main:
        return {}  # rank 0 writes the adapter and the record
    shard = group.shard if group.world > 1 else "none"
    return plan.finish(
        training, result, main_eval, model, "torch", ranks=group.world, global_batch=global_batch, shard=shard
    )


def _shard_note(group, model) -> str:
    held, whole = (units.size(n) for n in group.held(model))
    if group.sharded:
        return f"fsdp: rank 0 holds {held} of the base's {whole} (1/{group.world}), the LoRA weights whole"
    return f"ddp: every rank holds the whole base ({whole})"


def _model(args, precision, torch, place: str):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, precision.dtype)
    try:
        base = AutoModelForCausalLM.from_pretrained(args.base_model, dtype=dtype).to(place)
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
