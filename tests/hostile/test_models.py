"""Broken base models: every stage that reads one stops with a line naming the file, and writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from conftest import assert_one_line, leftovers, listing, write_adapter

SHARD = "model-00002-of-00002.safetensors"


def model_copy(source: Path, dest: Path, *changed: str) -> Path:
    """A copy of ``source`` whose files are hard links (cheap), except ``changed``, which are real copies
    the case may damage without touching the shared model."""
    dest.mkdir(parents=True)
    for f in source.iterdir():
        (shutil.copyfile if f.name in changed else os.link)(f, dest / f.name)
    return dest


def safetensors(tensors: list[tuple[str, int, int]], data_len: int) -> bytes:
    """A safetensors file of F32 vectors with the given (name, begin, end) offsets, as a damaged writer
    might leave it."""
    header = {
        name: {"dtype": "F32", "shape": [(end - begin) // 4], "data_offsets": [begin, end]}
        for name, begin, end in tensors
    }
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(data_len)


def truncate(path: Path, keep: int | None = None) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 4096 if keep is None else keep)


DAMAGE = {  # how the base is damaged -> (file changed, what the line must say)
    "config.json not JSON": ("config.json", lambda p: p.write_text("{not json"), "config.json: not valid JSON"),
    "config.json a list": ("config.json", lambda p: p.write_text("[1, 2]"), "config.json: not a JSON object"),
    "truncated shard": (SHARD, truncate, f"{SHARD}: truncated"),
    "empty shard": (SHARD, lambda p: truncate(p, 0), f"{SHARD}: truncated"),
    "overlapping offsets": (
        SHARD,
        lambda p: p.write_bytes(safetensors([("a", 0, 16), ("b", 8, 24)], 24)),
        f"{SHARD}: corrupt: tensor b overlaps",
    ),
    "a gap between tensors": (
        SHARD,
        lambda p: p.write_bytes(safetensors([("a", 0, 16), ("b", 32, 48)], 48)),
        f"{SHARD}: corrupt: a gap",
    ),
    "data past the last tensor": (
        SHARD,
        lambda p: p.write_bytes(safetensors([("a", 0, 16)], 64)),
        f"{SHARD}: corrupt: 48 bytes after the last tensor",
    ),
    "header past the end": (
        SHARD,
        lambda p: p.write_bytes(struct.pack("<Q", 10**6) + b"{}"),
        f"{SHARD}: corrupt safetensors header",
    ),
    "shard missing": (SHARD, lambda p: p.unlink(), f"{SHARD}: missing shard"),
}


@pytest.fixture
def damaged(workspace, tiny_model, request):
    changed, damage, named = DAMAGE[request.param]
    base = model_copy(tiny_model, workspace / "models" / "base", changed)
    damage(base / changed)
    write_adapter(workspace / "outputs" / "adapters" / "a1")
    return base, named


STAGES = {
    "merge": lambda base: (
        "merge_lora",
        "--adapter",
        "outputs/adapters/a1",
        "--base_model",
        base,
        "--output",
        "outputs/merged/m",
    ),
    "convert": lambda base: ("convert_gguf", "--model", base, "--output", "outputs/gguf/m-f16.gguf"),
    "train": lambda base: (
        "train_lora",
        "--base_model",
        base,
        "--dataset",
        "data.jsonl",
        "--output",
        "outputs/adapters/new",
        "--device",
        "cpu",
    ),
}


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
@pytest.mark.parametrize("which", list(STAGES))
def test_a_damaged_base_model_is_named_and_nothing_is_written(workspace, damaged, stage, which):
    base, named = damaged
    (workspace / "data.jsonl").write_text('{"text": "hello"}\n')
    before = listing(workspace)
    result = stage(*STAGES[which](base))
    assert_one_line(result, 1, named)
    assert listing(workspace) == before and not leftovers(workspace)


def test_a_base_without_a_chat_template_is_named_for_chat_data(workspace, tiny_model, stage):
    base = model_copy(tiny_model, workspace / "models" / "base", "tokenizer_config.json")
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    (base / "chat_template.jinja").unlink(missing_ok=True)
    (workspace / "data.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n"
    )
    before = listing(workspace)
    result = stage(
        "train_lora",
        "--base_model",
        base,
        "--dataset",
        "data.jsonl",
        "--output",
        "outputs/adapters/x",
        "--device",
        "cpu",
        "--no-cache",
    )
    assert_one_line(result, 1, "no chat template", "data.jsonl:1")
    assert listing(workspace) == before


def test_a_base_without_tokenizer_files_is_named(workspace, tiny_model, stage):
    base = model_copy(tiny_model, workspace / "models" / "base")
    (base / "tokenizer.json").unlink()
    result = stage("convert_gguf", "--model", base, "--output", "outputs/gguf/m-f16.gguf")
    assert_one_line(result, 1, "missing tokenizer files: tokenizer.json")
    assert not (workspace / "outputs" / "gguf").exists()
