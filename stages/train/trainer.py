"""The step loop both backends run (torch's in loop.py, mlx's in mlx_backend/loop.py): the epochs' batch
order (batches.py), gradient-accumulation windows, reports through a callback (callbacks.py turns them
into events and log lines), an eval and a checkpoint every N steps and on SIGINT/SIGTERM (the step in
flight finishes first), the final eval.

Torch-free: a backend brings only what is its own (one optimizer step, an eval, a checkpoint, its
memory figures) as a ``Backend``; what a run of ranks agrees on has a lone process's no-op defaults.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.train.batches import Batch, collate, epoch_batches
from stages.train.callbacks import TrainingCallback
from stages.train.data import Sample
from stages.train.launch import AgreedStop
from stages.train.state import TrainState


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


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current optimizer step (then it checkpoints)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.requested = False
        for sig in signals:
            signal.signal(sig, self._set)

    def _set(self, *_):
        self.requested = True


@dataclass
class Backend:
    """What one run trains with, and what the loop asks of the backend that trains it: the loop takes
    this one object (and a callback). Each backend's dataclass adds its own fields (scheduler, group...)."""

    model: Any  # put in training mode (``.train()``) before the first step
    optimizer: Any
    samples: list[Sample]
    eval_samples: list[Sample]
    state: TrainState  # what a checkpoint saves and a resume restores; the loop advances it
    cfg: LoopConfig
    output: Path  # checkpoints go into its checkpoints/
    device: str
    pad_id: int

    def step(self, group: list) -> tuple[float, float, int]:
        """One optimizer step over ``group``'s micro-batches (lists of sample indices), taken at
        ``state.step``: (loss per labelled token, grad norm, tokens), all three the whole group's."""
        raise NotImplementedError

    def learning_rate(self) -> float:
        """The rate of the next step, once ``state.step`` counts the one just taken."""
        raise NotImplementedError

    def evaluate(self, samples: list[Sample]) -> float | None:
        """Mean loss per labelled token of ``samples`` (None for none), the model left in training mode."""
        raise NotImplementedError

    def save(self) -> Path | None:
        """A checkpoint of ``state``: its directory, or None on a rank that writes none."""
        raise NotImplementedError

    def memory(self) -> dict[str, int]:
        """Accelerator memory for the metrics event (bytes)."""
        return {}

    def batch(self, indices: list[int]) -> Batch:
        return collate([self.samples[i] for i in indices], self.pad_id, self.cfg.batching == "pack")

    # A run of several ranks (torch's distributed.Group) overrides these; alone they do nothing.
    @property
    def stop_signals(self) -> tuple[int, ...]:
        return (signal.SIGINT, signal.SIGTERM)

    def agree(self, stop: bool) -> bool:
        """Whether any rank was asked to stop, so every rank stops after the same step."""
        return stop

    def barrier(self) -> None:
        """No rank leaves before the checkpoint is whole."""


def run(b: Backend, callback: TrainingCallback) -> dict:
    cfg, state = b.cfg, b.state
    lengths = np.array([len(s.ids) for s in b.samples])
    per_epoch, total = total_steps(len(b.samples), cfg)
    stop = StopFlag(b.stop_signals)
    b.model.train()
    loop_started, cpu_started, tokens_before = time.monotonic(), time.process_time(), state.tokens
    window = _Window()
    step_times: list[float] = []
    last_loss = None
    while state.step < total:
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.batching)
        while state.batch < len(batches) and state.step < total:
            group = batches[state.batch : state.batch + cfg.accumulation]
            step_started = time.monotonic()
            last_loss, grad_norm, tokens = b.step(group)
            stopping = b.agree(stop.requested)  # read once: the checkpoint and the stop go together
            state.step += 1
            state.batch += len(group)
            state.samples += sum(len(g) for g in group)
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
                        "learning_rate": b.learning_rate(),
                        "grad_norm": round(grad_norm, 6) if math.isfinite(grad_norm) else None,  # fp16 overflow
                        "tokens_per_second": round(window.tokens / max(time.monotonic() - window.started, 1e-9), 1),
                        "eta_s": round(sum(step_times) / len(step_times) * (total - state.step), 1),
                        "device": b.device,
                        **b.memory(),
                    }
                )
                window = _Window()
            if state.step == total:
                break  # a stop asked for now is moot: the final adapter is seconds away
            if state.step % cfg.checkpoint_every == 0 or stopping:
                _evaluate(b, total, callback)
                path = b.save()
                if path is not None:
                    callback.on_checkpoint({"step": state.step, "total_steps": total, "path": str(path)})
                b.barrier()
            if stopping:
                raise AgreedStop()  # a Cancelled; in a group it tells the ranks apart from a Ctrl-C in setup
        if state.batch >= len(batches):
            state.epoch, state.batch = state.epoch + 1, 0
    seconds, cpu_seconds = time.monotonic() - loop_started, time.process_time() - cpu_started
    eval_loss = _evaluate(b, total, callback)
    return {
        "loss": last_loss,
        "eval_loss": eval_loss,
        "steps": state.step,
        "train_seconds": round(seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),
        "tokens_per_second": round((state.tokens - tokens_before) / max(seconds, 1e-9), 1),
    }


def eval_batches(samples: list[Sample], cfg: LoopConfig, pad_id: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
    """``samples`` in batches of the run's size and layout; in a group rank r takes every r-th."""
    for start in range(rank * cfg.batch_size, len(samples), world * cfg.batch_size):
        yield collate(samples[start : start + cfg.batch_size], pad_id, cfg.batching == "pack")


def _evaluate(b: Backend, total: int, callback: TrainingCallback) -> float | None:
    eval_loss = b.evaluate(b.eval_samples)
    if eval_loss is not None:
        callback.on_val_loss_report({"step": b.state.step, "total_steps": total, "eval_loss": round(eval_loss, 6)})
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
