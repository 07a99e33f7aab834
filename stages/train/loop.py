"""The training loop: token-weighted loss over gradient-accumulation windows, reports through a
callback (stages/train/callbacks.py turns them into events and log lines), checkpoints every N steps
and on SIGINT/SIGTERM (the step in flight finishes first)."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stages.train import checkpoint
from stages.train.batches import Batch, collate, epoch_batches
from stages.train.callbacks import TrainingCallback
from stages.train.checkpoint import TrainState
from stages.train.data import IGNORE, Sample
from stages.train.device import memory_fields
from stages.train.distributed import SOLO, Group
from stages.train.launch import AgreedStop


@dataclass
class LoopConfig:
    epochs: float
    batch_size: int
    accumulation: int
    seed: int
    log_every: int
    checkpoint_every: int
    batching: str = "pack"  # see batches.py
    max_grad_norm: float = 1.0


def total_steps(n_samples: int, cfg: LoopConfig) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    per_epoch = math.ceil(math.ceil(n_samples / cfg.batch_size) / cfg.accumulation)
    return per_epoch, max(1, math.ceil(per_epoch * cfg.epochs))


def loss_sum(model, batch: Batch, device: str) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over labelled positions. Logits are computed only where a label is:
    prompts and padding never reach the 152k-wide vocabulary projection."""
    ids, positions, labels = (torch.from_numpy(a).to(device) for a in (batch.ids, batch.positions, batch.labels))
    causal_lm = model.get_base_model()
    # No attention mask: the position ids mark where samples (and padding) start, see batches.py.
    hidden = causal_lm.model(input_ids=ids, position_ids=positions).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = causal_lm.lm_head(hidden[keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction="sum"), int(keep.sum())


def evaluate(
    model, samples: list[Sample], cfg: LoopConfig, pad_id: int, device: str, group: Group = SOLO
) -> float | None:
    """Mean loss per labelled token; in a group each rank takes every N-th batch and the sums are added."""
    if not samples:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(group.rank * cfg.batch_size, len(samples), group.world * cfg.batch_size):
            batch = collate(samples[start : start + cfg.batch_size], pad_id, cfg.batching == "pack")
            value, n = loss_sum(model, batch, device)
            total, count = total + float(value), count + n
    model.train()
    total, count = group.sum(total, count)
    return total / max(count, 1)


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current optimizer step (then it checkpoints)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.requested = False
        for sig in signals:
            signal.signal(sig, self._set)

    def _set(self, *_):
        self.requested = True


@dataclass
class Training:
    """What one run trains with: the loop takes this one object (and a callback) instead of a dozen
    arguments. ``state`` is what a checkpoint saves and a resume restores."""

    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    samples: list[Sample]
    eval_samples: list[Sample]
    state: TrainState
    cfg: LoopConfig
    output: Path
    device: str
    pad_id: int
    # the torchrun group this process is one rank of (distributed.py)
    group: Group = field(default_factory=lambda: SOLO)


def run(t: Training, callback: TrainingCallback) -> dict:
    cfg, state = t.cfg, t.state
    lengths = np.array([len(s.ids) for s in t.samples])
    per_epoch, total = total_steps(len(t.samples), cfg)
    stop = StopFlag(t.group.stop_signals)
    t.model.train()
    loop_started, cpu_started, tokens_before = time.monotonic(), time.process_time(), state.tokens
    window = _Window()
    step_times: list[float] = []
    last_loss = None
    while state.step < total:
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.batching)
        while state.batch < len(batches) and state.step < total:
            group = batches[state.batch : state.batch + cfg.accumulation]
            step_started = time.monotonic()
            last_loss, grad_norm, tokens = _step(t, group)
            stopping = t.group.agree(stop.requested)  # every rank stops after the same step
            state.step += 1
            state.batch += len(group)
            state.samples += sum(len(b) for b in group)
            state.tokens += tokens
            state.losses.append([state.step, round(last_loss, 6)])
            window.add(last_loss, tokens)
            step_times = (step_times + [time.monotonic() - step_started])[-50:]
            if state.step % cfg.log_every == 0 or state.step == total:
                callback.on_train_loss_report(
                    {
                        "step": state.step,
                        "total_steps": total,
                        "epoch": round(state.step / per_epoch, 4),
                        "loss": round(window.loss / window.steps, 6),
                        "learning_rate": t.scheduler.get_last_lr()[0],
                        "grad_norm": round(grad_norm, 6) if math.isfinite(grad_norm) else None,  # fp16 overflow
                        "tokens_per_second": round(window.tokens / max(time.monotonic() - window.started, 1e-9), 1),
                        "eta_s": round(sum(step_times) / len(step_times) * (total - state.step), 1),
                        "device": t.device,
                        **memory_fields(t.device),
                    }
                )
                window = _Window()
            if state.step == total:
                break  # a stop asked for now is moot: the final adapter is seconds away
            if state.step % cfg.checkpoint_every == 0 or stopping:
                _evaluate(t, total, callback)
                if t.group.is_main:  # the state is the same on every rank: one writes it
                    path = checkpoint.save(t.output, state, t.model, t.optimizer, t.scheduler, t.scaler)
                    callback.on_checkpoint({"step": state.step, "total_steps": total, "path": str(path)})
                t.group.barrier()  # no rank leaves before the checkpoint is whole
            if stopping:
                raise AgreedStop()  # a Cancelled; in a group it tells the ranks apart from a Ctrl-C in setup
        if state.batch >= len(batches):
            state.epoch, state.batch = state.epoch + 1, 0
    seconds, cpu_seconds = time.monotonic() - loop_started, time.process_time() - cpu_started
    eval_loss = _evaluate(t, total, callback)
    return {
        "loss": last_loss,
        "eval_loss": eval_loss,
        "steps": state.step,
        "train_seconds": round(seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),
        "tokens_per_second": round((state.tokens - tokens_before) / max(seconds, 1e-9), 1),
    }


def _step(t: Training, group: list) -> tuple[float, float, int]:
    """One optimizer step over ``group``'s micro-batches (this rank computes its share of them):
    (loss per labelled token, grad norm, tokens), all three the whole group's."""
    # Token-weighted: every labelled token in the window counts the same, whatever its batch or rank
    # (a sample's first token is never a target: collate's rule, counted without collating).
    window_labels = sum(int((t.samples[i].labels[1:] != IGNORE).sum()) for b in group for i in b)
    tokens = sum(len(t.samples[i].ids) for b in group for i in b)
    mine, factor = t.group.share(group)
    step_loss = 0.0
    for j, b in enumerate(mine):
        # Dropout masks drawn per micro-batch of the global step: the same on any number of ranks.
        torch.manual_seed(_micro_seed(t.cfg.seed, t.state.step, t.group.rank + j * t.group.world))
        batch = collate([t.samples[i] for i in b], t.pad_id, t.cfg.batching == "pack")
        value, _ = t.group.loss(t.model, batch, t.device, sync=j == len(mine) - 1)
        scaled = value * (factor / window_labels)
        (t.scaler.scale(scaled) if t.scaler else scaled).backward()
        step_loss += float(value.detach()) * (factor > 0)
    (step_loss,) = t.group.sum(step_loss)
    if t.scaler:
        t.scaler.unscale_(t.optimizer)
    trainable = [p for p in t.model.parameters() if p.requires_grad]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, t.cfg.max_grad_norm))
    if t.scaler:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    return step_loss / max(window_labels, 1), grad_norm, tokens


def _micro_seed(seed: int, step: int, index: int) -> int:
    return (seed * 1_000_003 + step * 4099 + index) % (1 << 63)


def _evaluate(t: Training, total: int, callback: TrainingCallback) -> float | None:
    eval_loss = evaluate(t.model, t.eval_samples, t.cfg, t.pad_id, t.device, t.group)
    if eval_loss is not None:
        callback.on_val_loss_report({"step": t.state.step, "total_steps": total, "eval_loss": round(eval_loss, 6)})
    return eval_loss


@dataclass
class _Window:
    """The steps since the last report: their mean loss and token rate."""

    loss: float = 0.0
    steps: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, loss: float, tokens: int) -> None:
        self.loss, self.steps, self.tokens = self.loss + loss, self.steps + 1, self.tokens + tokens
