"""Broken or foreign adapters, given to merge, convert --adapter and train --resume_from: one line naming
the file (and both shapes for an adapter of another base), before anything is written or trained."""

from __future__ import annotations

import pytest
from conftest import assert_one_line, leftovers, listing, write_adapter

DAMAGE = {  # how the adapter is damaged -> what the line must say
    "adapter_config.json not JSON": (
        lambda a: (a / "adapter_config.json").write_text("{r: 8"),
        "adapter_config.json: not valid JSON",
    ),
    "adapter_config.json a list": (
        lambda a: (a / "adapter_config.json").write_text("[]"),
        "adapter_config.json: not a JSON object",
    ),
    "no adapter_config.json": (lambda a: (a / "adapter_config.json").unlink(), "no adapter_config.json"),
    "truncated weights": (
        lambda a: (a / "adapter_model.safetensors").write_bytes((a / "adapter_model.safetensors").read_bytes()[:-100]),
        "adapter_model.safetensors: truncated",
    ),
    "pickle weights only": (
        lambda a: (a / "adapter_model.safetensors").rename(a / "adapter_model.bin"),
        "no adapter_model.safetensors",
    ),
    "another base's shape": (
        lambda a: write_adapter(a, hidden=128),
        "model.layers.0.self_attn.q_proj.weight is [64, 64] in the base but [128, 128]",
    ),
    "a module the base lacks": (
        lambda a: write_adapter(a, layers=3),
        "changes model.layers.2.self_attn.q_proj.weight, which the base model does not have",
    ),
}

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
    "convert": lambda base: (
        "convert_gguf",
        "--model",
        base,
        "--adapter",
        "outputs/adapters/a1",
        "--output",
        "outputs/gguf/m-f16.gguf",
    ),
    "train --resume_from": lambda base: (
        "train_lora",
        "--base_model",
        base,
        "--dataset",
        "data.jsonl",
        "--resume_from",
        "outputs/adapters/a1",
        "--output",
        "outputs/adapters/n",
        "--device",
        "cpu",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("which", list(STAGES))
def test_a_bad_adapter_is_named_and_nothing_is_written(workspace, tiny_model, stage, which, damage):
    adapter = write_adapter(workspace / "outputs" / "adapters" / "a1")
    change, named = DAMAGE[damage]
    change(adapter)
    (workspace / "data.jsonl").write_text('{"text": "hello"}\n')
    before = listing(workspace)
    result = stage(*STAGES[which](tiny_model))
    assert_one_line(result, 1, named)
    assert listing(workspace) == before and not leftovers(workspace)
