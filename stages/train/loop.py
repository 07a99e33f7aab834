"""The training loop: token-weighted loss over gradient-accumulation windows, metrics events,
checkpoints every N steps and on SIGINT/SIGTERM (the step in flight finishes first)."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stages.common.errors import Cancelled
from stages.train import checkpoint
from stages.train.batches import Batch, collate, epoch_batches
from stages.train.data import IGNORE, Sample
from stages.train.device import memory_fields
from w4tui.events import EventWriter


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


def evaluate(model, samples: list[Sample], cfg: LoopConfig, pad_id: int, device: str) -> float | None:
    if not samples:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(samples), cfg.batch_size):
            batch = collate(samples[start : start + cfg.batch_size], pad_id, cfg.batching == "pack")
            value, n = loss_sum(model, batch, device)
            total, count = total + float(value), count + n
    model.train()
    return total / max(count, 1)


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current optimizer step (then it checkpoints)."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._set)

    def _set(self, *_):
        self.requested = True


def run(
    model,
    optimizer,
    scheduler,
    scaler,
    samples: list[Sample],
    eval_samples: list[Sample],
    state,
    cfg: LoopConfig,
    output,
    device: str,
    pad_id: int,
    events: EventWriter,
) -> dict:
    lengths = np.array([len(s.ids) for s in samples])
    per_epoch, total = total_steps(len(samples), cfg)
    stop = StopFlag()
    model.train()
    loop_started, cpu_started, tokens_before = time.monotonic(), time.process_time(), state.tokens
    window_loss, window_steps, window_tokens, window_started = 0.0, 0, 0, time.monotonic()
    step_times: list[float] = []
    last_loss = None
    while state.step < total:
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, state.epoch, cfg.batching)
        while state.batch < len(batches) and state.step < total:
            group = batches[state.batch : state.batch + cfg.accumulation]
            step_started = time.monotonic()
            micro = [collate([samples[i] for i in b], pad_id, cfg.batching == "pack") for b in group]
            # Token-weighted: every labelled token in the window counts the same, whatever its batch.
            window_labels = sum(int((m.labels[:, 1:] != IGNORE).sum()) for m in micro)
            step_loss = 0.0
            for batch in micro:
                value, _ = loss_sum(model, batch, device)
                scaled = value / window_labels
                (scaler.scale(scaled) if scaler else scaled).backward()
                step_loss += float(value.detach())
                state.tokens += batch.tokens
                window_tokens += batch.tokens
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
            )
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.batch += len(group)
            state.samples += sum(len(b) for b in group)
            last_loss = step_loss / max(window_labels, 1)
            window_loss, window_steps = window_loss + last_loss, window_steps + 1
            state.losses.append([state.step, round(last_loss, 6)])
            step_times = (step_times + [time.monotonic() - step_started])[-50:]
            if state.step % cfg.log_every == 0 or state.step == total:
                elapsed = max(time.monotonic() - window_started, 1e-9)
                events.metrics(
                    step=state.step,
                    total_steps=total,
                    epoch=round(state.step / per_epoch, 4),
                    loss=round(window_loss / window_steps, 6),
                    learning_rate=scheduler.get_last_lr()[0],
                    grad_norm=round(grad_norm, 6) if math.isfinite(grad_norm) else None,  # fp16 overflow step
                    tokens_per_second=round(window_tokens / elapsed, 1),
                    eta_s=round(sum(step_times) / len(step_times) * (total - state.step), 1),
                    device=device,
                    **memory_fields(device),
                )
                events.progress(state.step, total, "steps")
                window_loss, window_steps, window_tokens, window_started = 0.0, 0, 0, time.monotonic()
            if state.step == total:
                break  # a stop asked for now is moot: the final adapter is seconds away
            if state.step % cfg.checkpoint_every == 0 or stop.requested:
                _checkpoint(
                    model, optimizer, scheduler, scaler, state, output, events, eval_samples, cfg, device, pad_id, total
                )
            if stop.requested:
                raise Cancelled()
        if state.batch >= len(batches):
            state.epoch, state.batch = state.epoch + 1, 0
    seconds, cpu_seconds = time.monotonic() - loop_started, time.process_time() - cpu_started
    eval_loss = evaluate(model, eval_samples, cfg, pad_id, device)
    if eval_loss is not None:
        events.metrics(step=state.step, total_steps=total, eval_loss=round(eval_loss, 6))
    return {
        "loss": last_loss,
        "eval_loss": eval_loss,
        "steps": state.step,
        "train_seconds": round(seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),
        "tokens_per_second": round((state.tokens - tokens_before) / max(seconds, 1e-9), 1),
    }


def _checkpoint(model, optimizer, scheduler, scaler, state, output, events, eval_samples, cfg, device, pad_id, total):
    eval_loss = evaluate(model, eval_samples, cfg, pad_id, device)
    if eval_loss is not None:
        events.metrics(step=state.step, total_steps=total, eval_loss=round(eval_loss, 6))
    path = checkpoint.save(output, state, model, optimizer, scheduler, scaler)
    events.artifact(path, "checkpoint", step=state.step)
