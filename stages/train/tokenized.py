"""Tokenize a dataset once: the result is cached, keyed by the data's hashes, the tokenizer and the
settings, so restarting a 46k-sample run (or resuming it) does not tokenize again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core.fsutil import atomic_path
from stages.train.data import DataReport, Sample, dataset_files, file_sha256, read_records, tokenize

CACHE_VERSION = 1


def tokenizer_fingerprint(tokenizer) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    digest.update((tokenizer.chat_template or "").encode())
    digest.update(str(tokenizer.eos_token).encode())
    return digest.hexdigest()[:16]


def load_samples(
    path: Path, tokenizer, max_len: int, overlong: str, skip_bad: bool, cache_dir: Path | None, log
) -> tuple[list[Sample], DataReport]:
    files = dataset_files(path)
    hashes = {str(f): file_sha256(f) for f in files}
    report = DataReport(files=hashes)
    key = hashlib.sha256(
        json.dumps([CACHE_VERSION, hashes, tokenizer_fingerprint(tokenizer), max_len, overlong, skip_bad]).encode()
    ).hexdigest()[:24]
    cached = cache_dir / f"{key}.npz" if cache_dir else None
    if cached and cached.exists():
        try:
            return _load(cached)
        except (OSError, ValueError, KeyError):
            log(f"ignoring unreadable token cache {cached}")
    records = read_records(files, skip_bad, report, log)
    if not getattr(tokenizer, "chat_template", None):
        chat = next((where for where, r in records if "messages" in r or "instruction" in r), None)
        if chat:  # transformers would raise a ValueError deep inside the first apply_chat_template
            from core.errors import StageError

            raise StageError(
                f"{chat}: a chat sample, but the base model's tokenizer has no chat template",
                hint="add chat_template to its tokenizer_config.json, or use prompt/completion samples",
            )
    samples: list[Sample] = []
    for _where, record in records:
        sample, cut = tokenize(record, tokenizer, max_len, overlong)
        if sample is None:
            report.dropped += 1
            continue
        report.truncated += int(cut)
        samples.append(sample)
    if not samples:
        raise_all_dropped(path, report, max_len)
    report.samples = len(samples)
    report.tokens = int(sum(len(s.ids) for s in samples))
    report.label_tokens = int(sum(int((s.labels != -100).sum()) for s in samples))
    if cached:
        _save(cached, samples, report)
    return samples, report


def raise_all_dropped(path: Path, report: DataReport, max_len: int) -> None:
    from core.errors import StageError

    raise StageError(
        f"{path}: all {report.dropped} samples were dropped: longer than max_seq_length {max_len} "
        f"or nothing left to learn after truncation",
        hint="raise --max_seq_length or use --overlong truncate",
    )


def _save(path: Path, samples: list[Sample], report: DataReport) -> None:
    lengths = np.array([len(s.ids) for s in samples], dtype=np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                lengths=lengths,
                ids=np.concatenate([s.ids for s in samples]),
                labels=np.concatenate([s.labels for s in samples]),
                report=np.frombuffer(json.dumps(asdict(report)).encode(), dtype=np.uint8),
            )


def _load(path: Path) -> tuple[list[Sample], DataReport]:
    with np.load(path) as data:
        bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
        ids, labels = data["ids"], data["labels"]
        samples = [Sample(ids[a:b], labels[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        report = DataReport(**json.loads(data["report"].tobytes().decode()))
    return samples, report
