"""torch's part of the training loop (trainer.py runs the steps): one optimizer step with a
token-weighted loss over the gradient-accumulation window, shared among the ranks of a torchrun
group (distributed.py), the eval, and the checkpoint (checkpoint.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stages.train import checkpoint
from stages.train.data import IGNORE, Sample
from stages.train.device import memory_fields
from stages.train.distributed import SOLO, Group
from stages.train.loss import loss_sum
from stages.train.trainer import Backend, LoopConfig, eval_batches

__all__ = ["Training", "evaluate", "loss_sum"]


def evaluate(
    model, samples: list[Sample], cfg: LoopConfig, pad_id: int, device: str, group: Group = SOLO
) -> float | None:
    """Mean loss per labelled token; in a group each rank takes every N-th batch and the sums are added."""
    if not samples:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        mine = list(eval_batches(samples, cfg, pad_id, group.rank, group.world))
        extra = max(0, group.eval_forwards(len(samples), cfg.batch_size) - len(mine))  # fsdp: as many on each
        for k, batch in enumerate(mine + [next(eval_batches(samples, cfg, pad_id))] * extra):
            value, n = group.eval_loss(model, batch, device)
            if k < len(mine):
                total, count = total + float(value), count + n
    model.train()
    total, count = group.sum(total, count)
    return total / max(count, 1)


@dataclass
class Training(Backend):
    """A torch run: trainer.Backend's fields, and these."""

    scheduler: Any = None  # transformers' cosine schedule with warmup
    scaler: Any = None  # torch.amp.GradScaler for fp16, else None
    # the torchrun group this process is one rank of (distributed.py)
    group: Group = field(default_factory=lambda: SOLO)

    def step(self, group: list) -> tuple[float, float, int]:
        """This rank computes its share of ``group``'s micro-batches; DDP (or ``reduce``) averages the
        gradients."""
        # Token-weighted: every labelled token in the window counts the same, whatever its batch or rank
        # (a sample's first token is never a target: collate's rule, counted without collating).
        window_labels = sum(int((self.samples[i].labels[1:] != IGNORE).sum()) for b in group for i in b)
        tokens = sum(len(self.samples[i].ids) for b in group for i in b)
        mine, factor = self.group.share(group)
        step_loss = 0.0
        for j, b in enumerate(mine):
            # Dropout masks drawn per micro-batch of the global step: the same on any number of ranks.
            torch.manual_seed(_micro_seed(self.cfg.seed, self.state.step, self.group.rank + j * self.group.world))
            value, _ = self.group.loss(self.model, self.batch(b), self.device, sync=j == len(mine) - 1)
            scaled = value * (factor / window_labels)
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            step_loss += float(value.detach()) * (factor > 0)
        (step_loss,) = self.group.sum(step_loss)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.group.reduce(trainable)  # fsdp: the LoRA gradients averaged (DDP did it in the last backward)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, self.cfg.max_grad_norm))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss / max(window_labels, 1), grad_norm, tokens

    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def evaluate(self, samples: list[Sample]) -> float | None:
        return evaluate(self.model, samples, self.cfg, self.pad_id, self.device, self.group)

    def save(self) -> Path | None:
        if not self.group.is_main:  # the state is the same on every rank: one writes it
            return None
        return checkpoint.save(self.output, self.state, self.model, self.optimizer, self.scheduler, self.scaler)

    def memory(self) -> dict[str, int]:
        return memory_fields(self.device)

    @property
    def stop_signals(self) -> tuple[int, ...]:
        return self.group.stop_signals

    def agree(self, stop: bool) -> bool:
        return self.group.agree(stop)

    def barrier(self) -> None:
        self.group.barrier()


def _micro_seed(seed: int, step: int, index: int) -> int:
    return (seed * 1_000_003 + step * 4099 + index) % (1 << 63)
