"""Training data: JSONL in the common shapes, validated line by line, tokenized with loss masks.

Shapes (one JSON object per line):
- ``{"messages": [{"role", "content"}, ...]}``  rendered with the tokenizer's chat template
- ``{"instruction", "input"?, "output"}``        becomes a user/assistant chat
- ``{"prompt", "completion"}``                  raw text, loss on the completion (+ EOS)
- ``{"text"}``                                  raw text, loss on all of it (+ EOS)

Loss is computed only on assistant / completion tokens: labels elsewhere are IGNORE.
A mistake stops with ``file:line: what is wrong`` unless ``skip_bad`` counts and skips it (core/datafile.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.datafile import ROLES, SHAPES, DataReport, check_record, dataset_files, file_sha256, read_records
from core.errors import StageError

# Reading and checking the lines is core/datafile.py's (the night's plan uses it too); the trainer's modules
# import it from here with the tokenizing half.
__all__ = [
    "IGNORE", "ROLES", "SHAPES", "DataReport", "Sample", "check_record", "dataset_files", "file_sha256",
    "read_records", "render", "tokenize",
]  # fmt: skip

IGNORE = -100


@dataclass
class Sample:
    ids: np.ndarray  # int32 token ids
    labels: np.ndarray  # int32, IGNORE where no loss


def render(record: dict, tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The text of a sample and the character spans that carry loss."""
    if "messages" in record or "instruction" in record:
        messages = record.get("messages") or _instruction_chat(record)
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            if not text.startswith(prefix) or not text.startswith(upto):
                raise StageError(
                    "the tokenizer's chat template does not render conversations prefix by prefix; "
                    "cannot find the assistant turns to train on"
                )
            spans.append((len(prefix), len(upto.rstrip("\n"))))  # the answer and its end-of-turn token
        return text, spans
    eos = tokenizer.eos_token or ""
    if "prompt" in record:
        text = record["prompt"] + record["completion"] + eos
        return text, [(len(record["prompt"]), len(text))]
    text = record["text"] + eos
    return text, [(0, len(text))]


def _instruction_chat(record: dict) -> list[dict]:
    user = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def tokenize(record: dict, tokenizer, max_len: int, overlong: str) -> tuple[Sample | None, bool]:
    """The sample (None when dropped) and whether it was cut to ``max_len``."""
    text, spans = render(record, tokenizer)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    labels = np.full_like(ids, IGNORE)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if any(s <= start and end <= e and end > start for s, e in spans):
            labels[t] = ids[t]
    cut = len(ids) > max_len
    if cut:
        if overlong == "drop":
            return None, True
        ids, labels = ids[:max_len], labels[:max_len]
    if not (labels[1:] != IGNORE).any():  # nothing left to learn (answer cut away)
        return None, cut
    return Sample(ids, labels), cut
