"""mlx's part of the training loop (trainer.py runs the steps, as for torch: same batches, reports,
checkpoints and stops): a token-weighted loss over accumulation windows, AdamW with bias correction,
cosine schedule with 3% warmup, grad-norm clipping, with mlx-lm's model and mlx's value_and_grad.

Dropout's random stream is reseeded from (seed, step) before every optimizer step, so a resumed run
draws the masks an uninterrupted one would have (mlx's global key cannot be restored from a file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map

from stages.train.batches import Batch
from stages.train.data import IGNORE, Sample
from stages.train.mlx_backend import checkpoint
from stages.train.mlx_backend.memory import memory_fields
from stages.train.mlx_backend.model import hidden_states, project
from stages.train.trainer import Backend, LoopConfig, eval_batches


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


def evaluate(model, samples: list[Sample], cfg: LoopConfig, pad_id: int) -> float | None:
    if not samples:
        return None
    model.eval()  # no dropout
    total, count = 0.0, 0
    for batch in eval_batches(samples, cfg, pad_id):
        x = inputs(batch)
        total, count = total + loss_sum(model, x).item(), count + x.labels
    model.train()
    return total / max(count, 1)


@dataclass
class Training(Backend):
    """An mlx run (``model`` mlx-lm's, ``optimizer`` make_optimizer's): trainer.Backend's fields, and:"""

    schedule: Any = None  # step -> learning rate (cosine_with_warmup's)

    def step(self, group: list, index: int | None = None) -> tuple[float, float, int]:
        # Dropout's stream from (seed, step), see the module docstring; calibration gives its own ``index``.
        mx.random.seed(self.cfg.seed * 1_000_003 + (self.state.step if index is None else index))
        micro = [inputs(self.batch(b)) for b in group]
        window_labels = max(sum(m.labels for m in micro), 1)
        value_and_grad = nn.value_and_grad(self.model, loss_sum)
        summed, grads = 0.0, None
        for x in micro:
            value, g = value_and_grad(self.model, x)
            grads = g if grads is None else tree_map(mx.add, grads, g)
            mx.eval(value, grads)  # one micro-batch's graph at a time, as torch frees each after backward
            summed += value.item()
        grads = tree_map(lambda g: g / window_labels, grads)
        grads, norm = optim.clip_grad_norm(grads, self.cfg.max_grad_norm)
        self.optimizer.update(self.model, grads)
        mx.eval(self.model.trainable_parameters(), self.optimizer.state)
        return summed / window_labels, norm.item(), sum(m.tokens for m in micro)

    def learning_rate(self) -> float:
        return self.schedule(self.state.step).item()  # the next step's, as torch's get_last_lr

    def evaluate(self, samples: list[Sample]) -> float | None:
        return evaluate(self.model, samples, self.cfg, self.pad_id)

    def save(self) -> Path:
        return checkpoint.save(self.output, self.state, self.model, self.optimizer)

    def memory(self) -> dict[str, int]:
        return memory_fields()
