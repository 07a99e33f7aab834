"""Before a training starts: how many samples, how many tokens, how many steps — what Unsloth prints and
LLaMA-Factory's "preview dataset" shows. Read in a worker when the train form opens.

Tokens are counted with the real Qwen2.5 tokenizer (``tokenizers``, not transformers) over each sample's
text, without the chat template's few tokens per message: an estimate, said so in the form. The steps
follow the train stage's own rule (stages/train/trainer.py ``total_steps``, stages/train/batches.py
``split_eval``), repeated here because the app never imports stages/ (pyproject's import contracts).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core import trainsettings
from core.eta import estimate

TOKENIZER = Path(__file__).resolve().parents[2] / "data" / "qwen2.5-tokenizer" / "tokenizer.json"
PROFILES = {"dry": 100, "mini": 3000, "full": None}  # as stages/train/selection.py
TEMPLATE_TOKENS = 5  # <|im_start|>role\n … <|im_end|>\n around each message


@dataclass(frozen=True)
class DatasetPreview:
    path: str
    files: int = 0
    samples: int = 0
    bad: int = 0  # lines that are not a JSON object
    shapes: tuple[tuple[str, int], ...] = ()  # ("messages", 220), ("instruction", 8)
    lengths: tuple[int, ...] = field(default=(), repr=False)  # estimated tokens per sample
    error: str | None = None

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def steps(self, values: dict[str, str]) -> tuple[int, int, int, int]:
        """(train samples, eval samples, steps per epoch, total steps) for the form's values."""
        n = self.samples
        want = PROFILES.get(values.get("--profile", "full"))
        n = min(n, want) if want else n
        fraction = _number(values.get("--eval_fraction"), 0.0)
        held = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * fraction)))
        train = n - held
        batch = max(1, int(_number(values.get("--batch_size"), 1)))
        accumulation = max(1, int(_number(values.get("--gradient_accumulation"), 1)))
        accumulation *= max(1, int(_number(values.get("--gpus"), 1)))  # a step takes every rank's share
        per_epoch = math.ceil(math.ceil(train / batch) / accumulation)
        return train, held, per_epoch, max(1, math.ceil(per_epoch * _number(values.get("--epochs"), 1.0)))

    def trained_tokens(self, values: dict[str, str]) -> int:
        """About how many tokens the run trains on: the train share of the (profile's) samples, each cut
        at --max_seq_length, times the epochs."""
        train, held, _, _ = self.steps(values)
        limit = int(_number(values.get("--max_seq_length"), 0)) or None
        kept = [min(n, limit) if limit else n for n in self.lengths[: train + held]]
        share = train / max(1, train + held)
        return round(sum(kept) * share * _number(values.get("--epochs"), 1.0))

    def describe(self, values: dict[str, str]) -> str:
        if self.error:
            return f"dataset {self.path}: {self.error}"
        train, held, per_epoch, total = self.steps(values)
        limit = int(_number(values.get("--max_seq_length"), 0)) or None
        longer = sum(1 for n in self.lengths if limit and n > limit)
        shapes = ", ".join(f"{count} {shape}" for shape, count in self.shapes)
        lines = [
            f"{self.samples:,} samples in {self.files} file{'s' if self.files != 1 else ''} ({shapes})"
            + (f", {self.bad} unreadable lines" if self.bad else ""),
            f"≈{self.tokens:,} tokens, {min(self.lengths, default=0)}–{max(self.lengths, default=0)} per sample"
            + (f"; {longer} ({longer / max(1, self.samples):.0%}) longer than {limit}" if limit else ""),
            f"{train:,} train / {held:,} eval → {per_epoch:,} steps per epoch × {values.get('--epochs', '1')} epochs"
            f" = {total:,} steps",
            *self._global_batch(values),
            eta_line(values, self.trained_tokens(values)),
        ]
        histogram = self.histogram()
        return "\n".join(lines + ([histogram] if histogram else []))

    @staticmethod
    def _global_batch(values: dict[str, str]) -> list[str]:
        ranks = max(1, int(_number(values.get("--gpus"), 1)))
        if ranks == 1:
            return []
        batch = max(1, int(_number(values.get("--batch_size"), 1)))
        accumulation = max(1, int(_number(values.get("--gradient_accumulation"), 1)))
        return [
            f"global batch {batch * ranks * accumulation} = batch {batch} × {ranks} GPUs × accumulation {accumulation}"
        ]

    def histogram(self, bins: int = 8) -> str:
        """Token lengths in ``bins`` bars: ``lengths 12▁▃█▆▂▁▁▁480``."""
        if not self.lengths:
            return ""
        low, high = min(self.lengths), max(self.lengths)
        width = max(1, math.ceil((high - low + 1) / bins))
        counts = Counter(min(bins - 1, (n - low) // width) for n in self.lengths)
        top = max(counts.values())
        bars = "".join("▁▂▃▄▅▆▇█"[round(counts.get(i, 0) / top * 7)] if counts.get(i) else " " for i in range(bins))
        return f"token lengths {low} {bars} {high}"


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


def _texts(record: dict) -> tuple[str, list[str]]:
    """The sample's shape and its texts (the parts the tokenizer sees)."""
    if isinstance(record.get("messages"), list):
        return "messages", [str(m.get("content", "")) for m in record["messages"] if isinstance(m, dict)]
    for shape, keys in (
        ("instruction", ("instruction", "input", "output")),
        ("prompt", ("prompt", "completion")),
        ("text", ("text",)),
    ):
        if shape in record:
            return shape, [str(record.get(k, "")) for k in keys if record.get(k)]
    return "unknown", []


def missing(path: Path) -> DatasetPreview | None:
    """At once, without reading: the preview of a dataset that is not there (else None)."""
    if not path.exists() or (path.is_dir() and not any(path.rglob("*.jsonl"))):
        return DatasetPreview(str(path), error="no .jsonl files here yet (see [paths] data)")
    return None


def preview(path: Path) -> DatasetPreview:
    if (nothing := missing(path)) is not None:
        return nothing
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    from tokenizers import Tokenizer  # deferred: only the train form needs it

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    shapes: Counter[str] = Counter()
    texts: list[list[str]] = []
    bad = 0
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if not isinstance(record, dict):
                    bad += 1
                    continue
                shape, parts = _texts(record)
                shapes[shape] += 1
                texts.append(parts)
    flat = [t for parts in texts for t in parts]
    counts = iter(len(e.ids) for e in tokenizer.encode_batch(flat)) if flat else iter(())
    lengths = tuple(sum(next(counts) for _ in parts) + TEMPLATE_TOKENS * len(parts) for parts in texts)
    return DatasetPreview(str(path), len(files), len(texts), bad, tuple(shapes.most_common()), lengths)


# The form's flags that decide what a trained token costs (core/eta.py COST_ARGS, those the form has).
COST_FLAGS = tuple(n for n in trainsettings.names(trainsettings.FORM) if n in trainsettings.names(trainsettings.COST))


def eta_line(values: dict[str, str], tokens: int) -> str:
    """The ETA before starting, measured: the rate of the newest finished run beside --output with the
    same base model and cost settings (core/eta.py does the same in the stage, with the device
    too); without one, how to measure it."""
    output = values.get("--output")
    best = None
    for record_path in Path(output).parent.glob("*/training_run.json") if output else ():
        try:
            record = json.loads(record_path.read_text())
            args, rate = record["args"], float(record["tokens_per_second"])
            same = str(Path(str(args.get("base_model")))) == str(Path(values.get("--base_model", ""))) and all(
                values.get(f"--{k}") is None or str(args.get(k)) == values[f"--{k}"] for k in COST_FLAGS
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if same and rate > 0 and (best is None or float(record.get("ended") or 0) > best[0]):
            best = (float(record.get("ended") or 0), rate, record_path.parent.name, record.get("device", "?"))
    if best is None or tokens <= 0:
        return "ETA: no finished run with these settings yet; `w4tui run train --eta` measures one (4 steps)"

    return "ETA: " + estimate(tokens, best[1], f"the rate of {best[2]} on {best[3]}")["text"]
