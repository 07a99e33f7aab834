"""Put a training run together, whichever backend trains it (torch: torch_run.py; mlx:
mlx_backend/run.py): the data and its eval split, what an exact resume must match, the ETA, the loop
with its reports, then the adapter and the run record. Torch-free, so the mlx backend never loads torch;
a backend brings its model, optimizer and checkpoints (a trainer.Backend) and the run's few own facts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import eta, trainsettings, units
from core.config import load_config
from core.errors import StageError
from core.events import EventWriter
from core.fsutil import atomic_write_text, fsync_dir
from stages.train import selection
from stages.train import state as layout
from stages.train.callbacks import CallbackList, EventsCallback, LogLineCallback
from stages.train.state import TrainState
from stages.train.trainer import Backend, LoopConfig, run, total_steps

RECORD = "training_run.json"
MICRO = "micro_batches_per_step"  # ranks x gradient_accumulation
# Flags that change what an exact resume would compute; a resume with other values is refused.
TRAJECTORY = trainsettings.names(trainsettings.RESUME)


@dataclass
class Plan:
    """What a run starts from, before any model loads: its data, what a resume must match, the ETA."""

    args: Any
    events: EventWriter
    device: str
    base_precision: str  # "float32", "bfloat16", "4-bit"...
    tokenizer: Any
    chosen: selection.Selection
    data_key: str  # fingerprint of the tokenized data
    settings: dict  # the TRAJECTORY flags (and MICRO): a resume with others is refused
    resume_at: Path | None  # --resume: the checkpoint to continue from
    tokens_to_train: int
    predicted: dict | None  # the ETA from the rate an earlier run measured, when one did
    started: float = 0.0  # when the loop started (time.time()), for the record

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def loop_config(self) -> tuple[LoopConfig, int]:
        """The loop's settings and its total optimizer steps (the schedule's length)."""
        a = self.args
        cfg = LoopConfig(
            a.epochs,
            a.batch_size,
            self.settings[MICRO],  # the global step: the schedule and the batch order follow it
            a.seed,
            a.log_every,
            a.checkpoint_every,
            a.batching,
        )
        return cfg, total_steps(len(self.chosen.train), cfg)[1]

    def state(self, total: int, load: Callable[[Path], TrainState]) -> TrainState:
        """A fresh run's state, or with --resume the checkpoint's (``load`` restores the backend's part)."""
        if not self.resume_at:
            return TrainState(data_key=self.data_key, settings=self.settings)
        state = load(self.resume_at)
        self.events.log(f"resuming from {self.resume_at.name} (step {state.step} of {total})")
        return state

    def describe(self, total: int, what: str) -> None:
        c = self.chosen
        self.events.log(
            f"{len(c.train)} train / {len(c.eval)} eval samples, {c.report.tokens} tokens, "
            f"{total} steps on {self.device} ({what})"
        )

    def eta_report(self, calibrated: tuple[float, str] | None = None) -> dict:
        """--eta: say how long the run would take and train nothing; at the rate an earlier run
        measured, else at ``calibrated``'s (tokens/s, how) from a few real steps."""
        predicted = eta.estimate(self.tokens_to_train, *calibrated) if calibrated else self.predicted
        return _report_eta(predicted, self.events)

    def train(self, training: Backend, total: int) -> tuple[dict, float | None]:
        """The loop, from ``training.state`` on: (its result, the main dataset's eval loss)."""
        if self.predicted:  # what is left of it, on a resume
            self.predicted = eta.estimate(
                round(self.tokens_to_train * (1 - training.state.step / total)),
                self.predicted["rate"],
                self.predicted["source"],
            )
            self.events.log(f"ETA: {self.predicted['text']}")
        self.started = time.time()
        result = run(training, CallbackList([EventsCallback(self.events), LogLineCallback()]))
        # nightly: the loss on the slice of the main dataset no run trains on, so forgetting shows night by night
        return result, training.evaluate(self.chosen.main_eval)

    def finish(self, training: Backend, result: dict, main_eval: float | None, writer, backend: str, **counts) -> dict:
        """The adapter (``writer.save_pretrained(dir)`` writes PEFT's two files), the run record (with
        ``counts``, the backend's own facts), the artifact event; what the stage reports."""
        args, events, chosen, report = self.args, self.events, self.chosen, self.chosen.report
        if main_eval is not None:
            events.metrics(main_eval_loss=round(main_eval, 6), main_eval_samples=len(chosen.main_eval))
        parent = str(args.resume_from.resolve()) if args.resume_from else str(args.base_model.resolve())
        train_tokens = int(sum(len(s.ids) for s in chosen.train))
        counts = {
            "train_samples": len(chosen.train),
            "train_tokens": train_tokens,
            "eval_samples": len(chosen.eval),
            "replayed": chosen.replayed,
            "replay_data": chosen.replay_files,
            "main_eval_loss": main_eval,
            "main_eval_samples": len(chosen.main_eval),
            "device": self.device,
            "base_dtype": self.base_precision,
            **counts,
            "backend": backend,
            "base_precision": self.base_precision,
            "eta": eta.outcome(self.predicted, result["train_seconds"]),
        }
        if self.predicted:
            took = units.rough_duration(result["train_seconds"])
            events.log(f"the ETA was {units.rough_duration(self.predicted['eta_s'])}; it took {took}")
        _save_adapter(writer, args, report, result, counts, parent, self.started, training.state.losses)
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
            "samples": len(chosen.train),
            "tokens": train_tokens,
            "truncated": report.truncated,
            "dropped": report.dropped,
            "skipped": report.skipped,
            "replayed": chosen.replayed,
            "train_seconds": result["train_seconds"],
            "tokens_per_second": result["tokens_per_second"],
            "backend": backend,
            "base_precision": self.base_precision,
        }


def plan(
    args, events: EventWriter, device: str, base_precision: str, world: int = 1, selecting=contextlib.nullcontext
) -> Plan:
    """Everything known before a model loads; ``selecting`` wraps the data selection (torch's ranks:
    rank 0 fills the tokenized cache first, the others read it)."""
    from transformers import AutoTokenizer  # the tokenizer only (mlx-lm loads transformers for its own too)

    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    cache = load_config(None).paths.state / "cache" / "tokenized" if args.cache else None
    log = lambda message: events.log(message, level="warning")  # noqa: E731
    # profile, replay and eval split in one place: the eval stage rebuilds the same split from the record
    with selecting():
        chosen = selection.select(args, tokenizer, cache, log)
    for note in chosen.notes:
        events.log(note)
    report = chosen.report
    data_key = hashlib.sha256(
        json.dumps([report.files, report.tokens, chosen.replay_files, chosen.replayed]).encode()
    ).hexdigest()[:16]
    settings = {name: _plain(getattr(args, name)) for name in TRAJECTORY}
    # What a step is made of, whatever the number of ranks: a resume on other ranks continues exactly.
    settings[MICRO] = args.gradient_accumulation * world
    resume_at = _resume_point(args, data_key, settings) if args.resume else None
    # The ETA before starting: the rate an earlier run on this device with these settings measured
    cost = eta.cost_key(
        {k: _plain(getattr(args, k)) for k in ("base_model", "gpus", "nnodes", "shard", *eta.COST_ARGS)},
        device,
        base_precision,
    )
    tokens_to_train = round(sum(len(s.ids) for s in chosen.train) * args.epochs)
    measured = eta.previous_rate(args.output.parent, cost, exclude=args.output)
    predicted = (
        eta.estimate(tokens_to_train, measured[0], f"measured by {Path(measured[1]).name}") if measured else None
    )
    return Plan(
        args,
        events,
        device,
        base_precision,
        tokenizer,
        chosen,
        data_key,
        settings,
        resume_at,
        tokens_to_train,
        predicted,
    )


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
    found = layout.latest(args.output)
    if found is None:
        raise StageError(f"{args.output}: no checkpoint to resume from", hint="start without --resume")
    saved = layout.read_state(found)
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
