"""Training data: JSONL in the common shapes, validated line by line, tokenized with loss masks.

Shapes (one JSON object per line):
- ``{"messages": [{"role", "content"}, ...]}``  rendered with the tokenizer's chat template
- ``{"instruction", "input"?, "output"}``        becomes a user/assistant chat
- ``{"prompt", "completion"}``                  raw text, loss on the completion (+ EOS)
- ``{"text"}``                                  raw text, loss on all of it (+ EOS)

Loss is computed only on assistant / completion tokens: labels elsewhere are IGNORE.
A mistake stops with ``file:line: what is wrong`` unless ``skip_bad`` counts and skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import StageError

IGNORE = -100
ROLES = ("system", "user", "assistant", "tool")
SHAPES = "messages, instruction/output, prompt/completion or text"


@dataclass
class Sample:
    ids: np.ndarray  # int32 token ids
    labels: np.ndarray  # int32, IGNORE where no loss


@dataclass
class DataReport:
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256
    samples: int = 0
    tokens: int = 0
    label_tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    skipped: int = 0


def dataset_files(path: Path) -> list[Path]:
    if not path.exists():
        raise StageError(f"{path}: no such file or directory", hint="check --dataset or [paths] data in config.toml")
    if path.is_dir():
        files = sorted(path.rglob("*.jsonl"))
        for f in files:  # skipping one silently would train on less data than the person thinks
            if f.is_symlink() and not f.exists():
                raise StageError(
                    f"{f}: unreadable: a symbolic link to {os.readlink(f)}, which does not exist",
                    hint="fix or remove the link",
                )
            if not f.is_file():
                raise StageError(f"{f}: not a regular file", hint="rename it, or move it out of the dataset directory")
        if not files:
            raise StageError(f"{path}: no .jsonl files in this directory")
        return files
    if path.suffix != ".jsonl":
        raise StageError(f"{path}: expected a .jsonl file (one JSON object per line)")
    return [path]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_records(files: list[Path], skip_bad: bool, report: DataReport, log) -> list[tuple[str, dict]]:
    """(where, record) for every valid line; ``where`` is ``file:line`` for later messages."""
    out: list[tuple[str, dict]] = []
    for path in files:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # the BOM Windows editors save UTF-8 with
                if not raw.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = _parse(raw)
                    check_record(record)
                except ValueError as exc:
                    if not skip_bad:
                        raise StageError(
                            f"{where}: {exc}", hint="fix the line, or pass --skip_bad to skip such lines"
                        ) from None
                    report.skipped += 1
                    if report.skipped <= 5:
                        log(f"skipped {where}: {exc}")
                    continue
                out.append((where, record))
    if not out:
        names = ", ".join(str(f) for f in files)
        raise StageError(
            f"{names}: no usable samples" + (f" ({report.skipped} bad lines skipped)" if report.skipped else "")
        )
    return out


def _parse(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8") from None
    try:
        record = json.loads(text.rstrip("\r\n"))  # without its newline a cut line's error names its column
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    return record


def check_record(record: dict) -> None:
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ValueError(f"messages[{i}] must be an object with role and content")
            if message.get("role") not in ROLES:
                raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)} (got {message.get('role')!r})")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"messages[{i}].content must be a string")
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            raise ValueError("no non-empty assistant message to learn from")
    elif "output" in record or "instruction" in record:
        for key in ("instruction", "output"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise ValueError(f"'{key}' must be a non-empty string")
        if not isinstance(record.get("input", ""), str):
            raise ValueError("'input' must be a string")
    elif "prompt" in record or "completion" in record:
        for key in ("prompt", "completion"):
            if not isinstance(record.get(key), str):
                raise ValueError(f"'{key}' must be a string")
        if not record["completion"].strip():
            raise ValueError("'completion' is empty")
    elif "text" in record:
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise ValueError("'text' must be a non-empty string")
    else:
        keys = ", ".join(sorted(record)) or "none"
        raise ValueError(f"unknown sample shape (keys: {keys}); expected {SHAPES}")


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
