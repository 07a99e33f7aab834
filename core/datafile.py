"""Training data files, the standard-library half: which files a dataset is, and each line read and checked
(UTF-8, one JSON object, a known shape), so a bad line stops with ``file:line: what is wrong``.

The trainer (stages/train/data.py) tokenizes what this reads; the night's plan counts samples with the same
rules without importing numpy or torch.

Shapes (one JSON object per line):
- ``{"messages": [{"role", "content"}, ...]}``  rendered with the tokenizer's chat template
- ``{"instruction", "input"?, "output"}``        becomes a user/assistant chat
- ``{"prompt", "completion"}``                  raw text, loss on the completion (+ EOS)
- ``{"text"}``                                  raw text, loss on all of it (+ EOS)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StageError

ROLES = ("system", "user", "assistant", "tool")
SHAPES = "messages, instruction/output, prompt/completion or text"


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
