"""The mlx training loop: the torch loop's schedule of steps, reports, checkpoints and stops (same
batches, token-weighted loss over accumulation windows, AdamW with bias correction, cosine schedule
with 3% warmup, grad-norm clipping), with mlx-lm's model and mlx's value_and_grad.

Dropout's random stream is reseeded from (seed, step) before every optimizer step, so a resumed run
draws the masks an uninterrupted one would have (mlx's global key cannot be restored from a file).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map

from core.errors import Cancelled
from stages.train.batches import Batch, collate, epoch_batches
from stages.train.callbacks import TrainingCallback
from stages.train.checkpoint import TrainState
from stages.train.data import IGNORE, Sample
from stages.train.loop import LoopConfig, StopFlag, _Window, total_steps
from stages.train.mlx_backend import checkpoint
from stages.train.mlx_backend.memory import memory_fields
from stages.train.mlx_backend.model import hidden_states, project


def cosine_with_warmup(lr: float, total: int):
    """transformers' get_cosine_schedule_with_warmup as an mlx schedule (called with the step count)."""
    warmup = max(1, round(total * 0.03))

    def schedule(step):
        s = mx.array(step, dtype=mx.float32)
        progress = (s - warmup) / max(1, total - warmup)
        cosine = mx.maximum(0.0, 0.5 * (1.0 + mx.cos(math.pi * progress)))
        return lr * mx.where(s < warmup, s / warmup, cosine)

    return schedule


def make_optimizer(schedule) -> optim.AdamW:
    return optim.AdamW(schedule, weight_decay=0.0, bias_correction=True)


@dataclass
class Inputs:
    """One micro-batch as the loss reads it: ids, the block-causal mask's segments, and the flat
    positions (and targets) of the labelled tokens, so logits are computed only where a label is."""

    ids: mx.array
    mask: mx.array
    where: mx.array
    targets: mx.array
    labels: int
    tokens: int


def inputs(batch: Batch) -> Inputs:
    segments = np.cumsum(batch.positions == 0, axis=1)  # a new segment wherever positions restart
    same = segments[:, :, None] == segments[:, None, :]
    causal = np.tril(np.ones((batch.ids.shape[1],) * 2, dtype=bool))
    targets = batch.labels[:, 1:]
    keep = np.flatnonzero(targets.reshape(-1) != IGNORE)
    width = batch.ids.shape[1] - 1
    rows, cols = np.divmod(keep, width)
    flat = rows * batch.ids.shape[1] + cols  # positions in the (rows * width) hidden states
    return Inputs(
        mx.array(batch.ids.astype(np.int32)),
        mx.array((same & causal)[:, None]),
        mx.array(flat.astype(np.int32)),
        mx.array(targets.reshape(-1)[keep].astype(np.int32)),
        len(keep),
        batch.tokens,
    )


def loss_sum(model, x: Inputs) -> mx.array:
    """Summed next-token loss over the labelled positions (float32 logits)."""
    hidden = hidden_states(model, x.ids, x.mask)
    picked = hidden.reshape(-1, hidden.shape[-1])[x.where]
    logits = project(model, picked).astype(mx.float32)
    return nn.losses.cross_entropy(logits, x.targets, reduction="sum")


@dataclass
class Training:
    model: nn.Module
    optimizer: optim.Optimizer
    samples: list[Sample]
    eval_samples: list[Sample]
    state: TrainState
    cfg: LoopConfig
    output: Path
    device: str
    pad_id: int
    total: int
    schedule: object  # step -> learning rate


def step(t: Training, group: list, step_index: int) -> tuple[float, float, int]:
    """One optimizer step over ``group``'s micro-batches: (loss per labelled token, grad norm, tokens)."""
    mx.random.seed(t.cfg.seed * 1_000_003 + step_index)  # see the module docstring
    micro = [inputs(collate([t.samples[i] for i in b], t.pad_id, t.cfg.batching == "pack")) for b in group]
    window_labels = max(sum(m.labels for m in micro), 1)
    value_and_grad = nn.value_and_grad(t.model, loss_sum)
    summed, grads = 0.0, None
    for x in micro:
        value, g = value_and_grad(t.model, x)
        grads = g if grads is None else tree_map(mx.add, grads, g)
        mx.eval(value, grads)  # one micro-batch's graph at a time, as torch frees each after backward
        summed += value.item()
    grads = tree_map(lambda g: g / window_labels, grads)
    grads, norm = optim.clip_grad_norm(grads, t.cfg.max_grad_norm)
    t.optimizer.update(t.model, grads)
    mx.eval(t.model.trainable_parameters(), t.optimizer.state)
    return summed / window_labels, norm.item(), sum(m.tokens for m in micro)


def evaluate(model, samples: list[Sample], cfg: LoopConfig, pad_id: int) -> float | None:
    if not samples:
        return None
    model.eval()  # no dropout
    total, count = 0.0, 0
    for start in range(0, len(samples), cfg.batch_size):
        x = inputs(collate(samples[start : start + cfg.batch_size], pad_id, cfg.batching == "pack"))
        total, count = total + loss_sum(model, x).item(), count + x.labels
    model.train()
    return total / max(count, 1)


def run(t: Training, callback: TrainingCallback) -> dict:
    cfg, state, total = t.cfg, t.state, t.total
    lengths = np.array([len(s.ids) for s in t.samples])
    per_epoch, _ = total_steps(len(t.samples), cfg)
    stop = StopFlag()
    t.model.train()
    loop_started, cpu_started, tokens_before = time.monotonic(), time.process_time(), state.tokens
    window = _Window()
    step_times: list[float] = []
    last_loss = None
    while state.step < total:
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.batching)
        while state.batch < len(batches) and state.step < total:
            group = batches[state.batch : state.batch + cfg.accumulation]
            started = time.monotonic()
            last_loss, grad_norm, tokens = step(t, group, state.step)
            state.step += 1
            state.batch += len(group)
            state.samples += sum(len(b) for b in group)
            state.tokens += tokens
            state.losses.append([state.step, round(last_loss, 6)])
            window.add(last_loss, tokens)
            step_times = (step_times + [time.monotonic() - started])[-50:]
            if state.step % cfg.log_every == 0 or state.step == total:
                callback.on_train_loss_report(
                    {
                        "step": state.step,
                        "total_steps": total,
                        "epoch": round(state.step / per_epoch, 4),
                        "loss": round(window.loss / window.steps, 6),
                        "learning_rate": t.schedule(state.step).item(),  # the next step's, as torch's get_last_lr
                        "grad_norm": round(grad_norm, 6) if math.isfinite(grad_norm) else None,
                        "tokens_per_second": round(window.tokens / max(time.monotonic() - window.started, 1e-9), 1),
                        "eta_s": round(sum(step_times) / len(step_times) * (total - state.step), 1),
                        "device": t.device,
                        **memory_fields(),
                    }
                )
                window = _Window()
            if state.step == total:
                break
            if state.step % cfg.checkpoint_every == 0 or stop.requested:
                _evaluate(t, callback)
                path = checkpoint.save(t.output, state, t.model, t.optimizer)
                callback.on_checkpoint({"step": state.step, "total_steps": total, "path": str(path)})
            if stop.requested:
                raise Cancelled()
        if state.batch >= len(batches):
            state.epoch, state.batch = state.epoch + 1, 0
    seconds, cpu_seconds = time.monotonic() - loop_started, time.process_time() - cpu_started
    return {
        "loss": last_loss,
        "eval_loss": _evaluate(t, callback),
        "steps": state.step,
        "train_seconds": round(seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),
        "tokens_per_second": round((state.tokens - tokens_before) / max(seconds, 1e-9), 1),
    }


def _evaluate(t: Training, callback: TrainingCallback) -> float | None:
    eval_loss = evaluate(t.model, t.eval_samples, t.cfg, t.pad_id)
    if eval_loss is not None:
        callback.on_val_loss_report({"step": t.state.step, "total_steps": t.total, "eval_loss": round(eval_loss, 6)})
    return eval_loss
