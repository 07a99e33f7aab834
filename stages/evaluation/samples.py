"""The held-out samples an eval scores, tokenized exactly as training tokenized them.

By default, the eval split of the training run that made the build's adapter: its arguments are read
back from training_run.json and the same selection code runs again (profile, replay, split), after
checking that the data files are still the ones it trained on. Or ``[eval] data``: JSONL files,
tokenized with the base model's tokenizer and the run's (or [train]'s) length settings.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from core.config import load_config
from core.errors import StageError
from stages.train.data import Sample, dataset_files, file_sha256
from stages.train.selection import select
from stages.train.tokenized import load_samples

RECORD = "training_run.json"
PATH_ARGS = ("base_model", "dataset", "output", "resume_from", "replay_dataset")


@dataclass
class EvalData:
    samples: list[Sample]
    source: str  # what a person reads: where the samples came from
    files: dict[str, str] = field(default_factory=dict)  # data file -> sha256

    @property
    def scored_tokens(self) -> int:
        return int(sum(int((s.labels[1:] != -100).sum()) for s in self.samples))


def training_args(adapter: Path) -> argparse.Namespace:
    try:
        record = json.loads((adapter / RECORD).read_text())
        raw = dict(record["args"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StageError(
            f"{adapter / RECORD}: cannot read the training record ({exc.__class__.__name__})",
            hint="set [eval] data to a JSONL file of held-out samples",
        ) from None
    for key in PATH_ARGS:
        raw[key] = Path(raw[key]) if raw.get(key) else None
    raw.setdefault("profile", "full")
    raw["data_sha256"] = record.get("data", {})
    return argparse.Namespace(**raw)


def train_eval_split(adapter: Path, tokenizer, log) -> EvalData:
    args = training_args(adapter)

    try:
        now = {str(f): file_sha256(f) for f in dataset_files(args.dataset)}
    except StageError as exc:
        raise StageError(
            f"the data {adapter.name} was trained on is gone: {exc}",
            hint="set [eval] data to a JSONL file of held-out samples",
        ) from None
    if now != args.data_sha256:
        raise StageError(
            f"{args.dataset}: changed since {adapter.name} was trained on it, so its eval split cannot be rebuilt",
            hint="set [eval] data to a JSONL file of held-out samples",
        )
    cache = load_config(None).paths.state / "cache" / "tokenized" if args.cache else None
    chosen = select(args, tokenizer, cache, log)
    if not chosen.eval:
        raise StageError(
            f"{adapter.name} was trained with eval_fraction 0: no held-out samples",
            hint="set [eval] data to a JSONL file of held-out samples",
        )
    return EvalData(chosen.eval, f"eval split of {adapter.name} ({len(chosen.eval)} samples)", now)


def from_files(path: Path, tokenizer, max_len: int, overlong: str, log) -> EvalData:
    samples, report = load_samples(path, tokenizer, max_len, overlong, False, None, log)
    return EvalData(samples, f"{path} ({len(samples)} samples)", report.files)


def cap_tokens(data: EvalData, max_tokens: int) -> tuple[EvalData, int]:
    """Whole samples, in order, up to ``max_tokens`` scored tokens (at least one sample); and how many
    were left out. The reference logits of every scored token are kept on disk, so this bounds it."""
    kept, total = [], 0
    for sample in data.samples:
        n = int((sample.labels[1:] != -100).sum())
        if kept and total + n > max_tokens:
            break
        kept.append(sample)
        total += n
    return EvalData(kept, data.source, data.files), len(data.samples) - len(kept)
