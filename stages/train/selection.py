"""Which samples a training run trains and evaluates on: the profile's share of the dataset, the replay
mix of a nightly run, the eval split, and the held-out slice of the main dataset.

One function, ``select``, does it all from the run's arguments, so the eval stage (which reads the
arguments back from training_run.json) gets exactly the held-out samples training had, token for token.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.config import load_config
from stages.train.batches import split_eval
from stages.train.data import DataReport, Sample
from stages.train.tokenized import load_samples

PROFILES = {"dry": 100, "mini": 3000, "full": None}  # samples drawn from the dataset; None: all
MAIN_EVAL_MAX = 128  # cap on the main-dataset slice a nightly run evaluates (minutes on a 7B, not hours)


@dataclass
class Selection:
    train: list[Sample]
    eval: list[Sample]
    report: DataReport
    replayed: int = 0
    replay_files: dict[str, str] = field(default_factory=dict)
    main_eval: list[Sample] = field(default_factory=list)  # nightly: held-out slice of the main dataset
    notes: list[str] = field(default_factory=list)  # said once in the run's log


def select(args, tokenizer, cache: Path | None, log) -> Selection:
    samples, report = load_samples(
        args.dataset, tokenizer, args.max_seq_length, args.overlong, args.skip_bad, cache, log
    )
    notes: list[str] = []
    samples = _profile(samples, getattr(args, "profile", "full"), args.seed, notes)
    main, main_report, held = None, None, np.arange(0)
    if getattr(args, "resume_from", None) or args.replay > 0:
        main, main_report = _main_dataset(args, tokenizer, cache, log)
    if main is not None and getattr(args, "resume_from", None):
        # the slice the full run held out (same split as a first run on the main data), capped
        held = main_holdout(len(main), args.eval_fraction, args.seed)
    replayed, replay_files = 0, {}
    if args.replay > 0 and main is not None:
        picks = replay_picks(len(main), len(samples), args.replay, args.seed, report.files, exclude=held)
        samples, replayed, replay_files = samples + [main[i] for i in picks], len(picks), main_report.files
    train_idx, eval_idx = split_eval(len(samples), args.eval_fraction, args.seed)
    return Selection(
        [samples[i] for i in train_idx],
        [samples[i] for i in eval_idx],
        report,
        replayed,
        replay_files,
        [main[i] for i in held] if main is not None else [],
        notes,
    )


def _profile(samples: list[Sample], profile: str, seed: int, notes: list[str]) -> list[Sample]:
    if profile not in PROFILES:
        from core.errors import StageError

        raise StageError(f"--profile {profile}: unknown profile (profiles: {', '.join(PROFILES)})")
    want = PROFILES[profile]
    if want is None:
        return samples
    if len(samples) <= want:
        notes.append(f"profile {profile}: the dataset has {len(samples)} samples, fewer than {want}: using all")
        return samples
    picks = np.sort(np.random.default_rng([seed, 4099]).choice(len(samples), size=want, replace=False))
    notes.append(f"profile {profile}: {want} of {len(samples)} samples")
    return [samples[i] for i in picks]


def _main_dataset(args, tokenizer, cache, log):
    source = args.replay_dataset or load_config(None).paths.data
    if not Path(source).exists() and args.replay <= 0:
        return None, None  # a nightly run without a main dataset on disk: nothing to hold out
    return load_samples(source, tokenizer, args.max_seq_length, args.overlong, args.skip_bad, cache, log)


def main_holdout(n: int, fraction: float, seed: int) -> np.ndarray:
    _, held = split_eval(n, fraction if fraction > 0 else 0.01, seed)
    return held[:MAIN_EVAL_MAX]


def replay_picks(n_main: int, n_new: int, replay: float, seed: int, new_files: dict, exclude: np.ndarray) -> np.ndarray:
    """Main-dataset samples to mix in so that they are ``replay`` of the mix, never the held-out slice.
    The draw is seeded by the new data, so each night replays a different part of the main set."""
    pool = np.setdiff1d(np.arange(n_main), exclude)
    want = min(len(pool), round(n_new * replay / (1 - replay)))
    night = int(hashlib.sha256(json.dumps(new_files, sort_keys=True).encode()).hexdigest()[:8], 16)
    return np.sort(pool[np.random.default_rng([seed, night]).choice(len(pool), size=want, replace=False)])
