"""The mlx backend's bad inputs, one line each and nothing written: mlx asked for where it is not
installed (with the pip line), --quantize_base with torch, a base mlx-lm cannot load, an adapter whose
targets or tensors do not match what mlx builds."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import assert_one_line, leftovers, listing, write_adapter

from core import train_backend as backend

needs_mlx = pytest.mark.skipif(not backend.mlx_installed(), reason="mlx-lm is not installed (pip install 'w4tui[mlx]')")


def train_args(base, *extra):
    return ("train_lora", "--base_model", base, "--dataset", "data.jsonl", "--output", "outputs/adapters/n", *extra)


@pytest.fixture
def data(workspace):
    from w4tui.demo.samples import write_dataset

    write_dataset(workspace / "data.jsonl", 8, seed=1)


def test_mlx_where_it_is_not_installed_names_the_pip_line(workspace, tiny_model, stage, data, monkeypatch):
    monkeypatch.setattr(backend, "mlx_installed", lambda: False)
    before = listing(workspace)
    result = stage(*train_args(tiny_model, "--backend", "mlx"))
    assert_one_line(result, 1, "--backend mlx: mlx and mlx-lm are not installed")
    assert "pip install 'w4tui[mlx]'" in result.stderr
    assert listing(workspace) == before


def test_quantize_base_with_torch_is_a_usage_mistake(workspace, tiny_model, stage, data):
    before = listing(workspace)
    result = stage(*train_args(tiny_model, "--backend", "torch", "--quantize_base", "4"))
    assert_one_line(result, 2, "--quantize_base 4 is for the mlx backend")
    assert "--backend mlx" in result.stderr and listing(workspace) == before


@needs_mlx
def test_a_base_mlx_cannot_load_is_named(workspace, tiny_model, stage, data):
    base = workspace / "odd-base"
    shutil.copytree(tiny_model, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "w4tui_unknown_arch"}))
    result = stage(*train_args(base, "--backend", "mlx", "--profile", "dry"))
    assert_one_line(result, 1, f"{base}: mlx-lm cannot load this model", "w4tui_unknown_arch")
    assert "--backend torch" in result.stderr
    assert not (workspace / "outputs" / "adapters" / "n" / "adapter_config.json").exists()
    assert not leftovers(workspace)


ADAPTERS = {  # how the parent adapter differs from what mlx builds -> what the line must say
    "a target the base lacks": (
        lambda a: write_adapter(a, config={"target_modules": ["q_proj", "w4_proj"]}),
        "target modules not in this model: w4_proj",
    ),
    "tensors for modules it does not target": (
        lambda a: write_adapter(a, config={"target_modules": ["v_proj"]}),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has no LoRA layer in this model",
    ),
    "another lora_r than its config": (
        lambda a: write_adapter(a, r=4, config={"r": 8}),
        "self_attn.q_proj.lora_A.weight is [4, 64] but this model's is [8, 64]",
    ),
    "another base's shape": (
        lambda a: write_adapter(a, hidden=128),
        "model.layers.0.self_attn.q_proj.weight is [64, 64] in the base but [128, 128]",
    ),
    "a regex for target_modules": (
        lambda a: write_adapter(a, config={"target_modules": ".*q_proj"}),
        "target_modules is '.*q_proj'; mlx continues adapters that list their modules",
    ),
}


@needs_mlx
@pytest.mark.parametrize("case", list(ADAPTERS))
def test_an_adapter_that_does_not_fit_is_named_before_training(workspace, tiny_model, stage, data, case):
    make, named = ADAPTERS[case]
    make(workspace / "outputs" / "adapters" / "a1")
    result = stage(*train_args(tiny_model, "--backend", "mlx", "--resume_from", "outputs/adapters/a1"))
    assert_one_line(result, 1, named)
    assert not (workspace / "outputs" / "adapters" / "n" / "adapter_config.json").exists()
    assert not leftovers(workspace)


def test_gpus_with_mlx_is_a_usage_mistake(workspace, tiny_model, stage, data, monkeypatch):
    monkeypatch.setattr(backend, "mlx_installed", lambda: True)  # the refusal comes before mlx loads
    before = listing(workspace)
    result = stage(*train_args(tiny_model, "--backend", "mlx", "--gpus", "2"))
    assert_one_line(result, 2, "--gpus 2 / --nnodes 1 are for the torch backend")
    assert listing(workspace) == before
