"""A short calibration when no earlier run measured the rate: a few optimizer steps on the real model
with the real settings, timed, then stopped. Nothing is written (the steps run in a scratch directory)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from stages.train.callbacks import TrainingCallback
from stages.train.loop import Training
from stages.train.state import TrainState
from stages.train.trainer import LoopConfig, run

STEPS = 4  # the first is dropped: it warms up and holds the longest batch (batches.py puts it first)


class _Rates(TrainingCallback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_loss_report(self, train_info: dict) -> None:
        self.rates.append(train_info["tokens_per_second"])


def calibrate(model, optimizer, scheduler, scaler, samples, cfg: LoopConfig, device: str, pad_id: int) -> float:
    """Trained tokens per second over STEPS optimizer steps of randomly drawn samples (the model and
    optimizer move: this is for a run that only estimates, never one that goes on training)."""
    n = min(len(samples), STEPS * cfg.batch_size * cfg.accumulation)
    picks = np.random.default_rng([cfg.seed, 31]).permutation(len(samples))[:n]
    short = dataclasses.replace(cfg, epochs=1, log_every=1, checkpoint_every=10**9)
    rates = _Rates()
    with tempfile.TemporaryDirectory(prefix="w4tui-calibrate-") as scratch:
        training = Training(
            model=model,
            optimizer=optimizer,
            samples=[samples[i] for i in picks],
            eval_samples=[],
            state=TrainState(),
            cfg=short,
            output=Path(scratch),
            device=device,
            pad_id=pad_id,
            scheduler=scheduler,
            scaler=scaler,
        )
        run(training, rates)
    return float(np.median(rates.rates[1:] or rates.rates))
