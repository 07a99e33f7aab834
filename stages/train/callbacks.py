"""Where the training loop's reports go: the run's events, and a human line in its log.

The loop reports flat dicts to one ``TrainingCallback`` (the shape of mlx-lm's trainer callbacks);
both consumers read the same dicts, so ``w4tui logs -f`` shows what the Training pane charts: one line
per report, like the Hugging Face Trainer's log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from core.events import EventWriter
from core.units import duration


class TrainingCallback:
    """What the loop reports, each as one flat dict (mlx-lm's trainer has the same shape)."""

    def on_train_loss_report(self, train_info: dict) -> None:
        """Every ``log_every`` steps and at the last: step, total_steps, epoch, loss, learning_rate,
        grad_norm, tokens_per_second, eta_s, device and memory fields."""

    def on_val_loss_report(self, val_info: dict) -> None:
        """At each checkpoint and at the end, when there are eval samples: step, total_steps, eval_loss."""

    def on_checkpoint(self, info: dict) -> None:
        """A checkpoint is complete on disk: step, total_steps, path."""


class EventsCallback(TrainingCallback):
    """metrics, progress and checkpoint artifact events (the format the TUI and the CLI read)."""

    def __init__(self, events: EventWriter) -> None:
        self.events = events

    def on_train_loss_report(self, train_info: dict) -> None:
        self.events.metrics(**train_info)
        self.events.progress(train_info["step"], train_info["total_steps"], "steps")

    def on_val_loss_report(self, val_info: dict) -> None:
        self.events.metrics(**val_info)

    def on_checkpoint(self, info: dict) -> None:
        self.events.artifact(info["path"], "checkpoint", step=info["step"])


class LogLineCallback(TrainingCallback):
    """step 40/120 (33%) | epoch 0.67 | loss 1.2345 | lr 1.96e-04 | grad_norm 0.412 | 1,234 tok/s | ETA 4m10s"""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.write = write or logging.getLogger("stages.train").info

    def on_train_loss_report(self, train_info: dict) -> None:
        self.write(train_line(train_info))

    def on_val_loss_report(self, val_info: dict) -> None:
        self.write(f"{_step(val_info)} | eval_loss {val_info['eval_loss']:.4f}")

    def on_checkpoint(self, info: dict) -> None:
        self.write(f"{_step(info)} | checkpoint saved: {info['path']}")


class CallbackList(TrainingCallback):
    """Several callbacks as one, called in order."""

    def __init__(self, callbacks: Sequence[TrainingCallback]) -> None:
        self.callbacks = list(callbacks)

    def on_train_loss_report(self, train_info: dict) -> None:
        for callback in self.callbacks:
            callback.on_train_loss_report(train_info)

    def on_val_loss_report(self, val_info: dict) -> None:
        for callback in self.callbacks:
            callback.on_val_loss_report(val_info)

    def on_checkpoint(self, info: dict) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(info)


def train_line(info: dict) -> str:
    parts = [_step(info), f"epoch {info['epoch']:.2f}", f"loss {info['loss']:.4f}", f"lr {info['learning_rate']:.2e}"]
    if info.get("grad_norm") is not None:
        parts.append(f"grad_norm {info['grad_norm']:.3f}")
    parts += [f"{info['tokens_per_second']:,.0f} tok/s", f"ETA {duration(info['eta_s'])}"]
    return " | ".join(parts)


def _step(info: dict) -> str:
    step, total = info["step"], info.get("total_steps")
    return f"step {step}/{total} ({step / total:.0%})" if total else f"step {step}"
