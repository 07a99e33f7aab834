"""Pre-flight on Apple Silicon with both backends: the default 7B night (r=16, all seven projections,
2048 tokens, checkpointing) against the smaller of free RAM and Metal's working set on a 32 GB Mac."""

from __future__ import annotations

import types

import pytest
from test_monitors_preflight import ALL, FakeProbe, train

from core.config import load_config
from w4tui.monitors import estimate as est
from w4tui.monitors import preflight
from w4tui.runs.runner import RunError

MAC_32GB = 32 * 2**30


class Mac(FakeProbe):
    """A 32 GB Apple-Silicon Mac with mlx installed (Metal's working set: 2/3 of RAM)."""

    def __init__(self, ram=24e9, ollama=5e9, has_mlx=True):
        super().__init__(ram=ram, ollama=ollama, total=MAC_32GB)
        self.has_mlx = has_mlx

    def backend(self, requested):
        return ("mlx" if self.has_mlx else "torch") if requested == "auto" else requested

    def working_set(self, total):
        return int(total * 2 / 3)


@pytest.fixture
def runner(config_file):
    return types.SimpleNamespace(config=load_config(config_file))


def test_qlora_weights_are_a_quarter_and_a_bit_of_bf16():
    bf16 = est.training_memory(est.QWEN25_7B, "bfloat16", 2048, 1, True, 16, ALL)
    q4 = est.training_memory(est.QWEN25_7B, "bfloat16", 2048, 1, True, 16, ALL, fused_attention=True, quantize_bits=4)
    assert round(bf16.weights / 1e9, 1) == 15.2 and round(q4.weights / 1e9, 1) == 4.3  # 0.5625 B/param
    assert round(bf16.total / 1e9, 1) == 23.8 and round(q4.total / 1e9, 1) == 11.5


def test_torch_bf16_over_the_working_set_is_refused_and_mlx_named(runner):
    with pytest.raises(RunError) as refused:
        preflight.check(runner.config, train(runner, ["--backend", "torch"]), probe=Mac())
    text = str(refused.value)
    assert "train needs ~23.8 GB of memory (torch: base weights 15.2 GB bfloat16" in text
    assert "22.9 GB is available (24.0 GB free RAM + 5.0 GB Ollama will unload, Metal's working set 22.9 GB)" in text
    assert "it fits with --backend mlx --quantize_base 4 (~11.5 GB)" in text


def test_the_default_night_on_a_mac_is_mlx_4_bit_and_keeps_ollama_loaded(runner):
    assert preflight.check(runner.config, train(runner, []), probe=Mac()) == []
    assert preflight.ollama_can_stay(runner.config, train(runner, []), probe=Mac())
    # Not when only unloading makes room, nor for torch, nor where mlx is not installed.
    assert not preflight.ollama_can_stay(runner.config, train(runner, []), probe=Mac(ram=10e9))
    assert (
        preflight.check(runner.config, train(runner, []), probe=Mac(ram=10e9)) == []
    )  # 10 + 5 GB once unloaded: it fits
    assert not preflight.ollama_can_stay(runner.config, train(runner, ["--backend", "torch"]), probe=Mac())
    assert not preflight.ollama_can_stay(runner.config, train(runner, []), probe=Mac(has_mlx=False))


def test_mlx_8_bit_that_does_not_fit_says_the_figures_in_bits(runner):
    with pytest.raises(RunError) as refused:
        preflight.check(runner.config, train(runner, ["--quantize_base", "8"]), probe=Mac(ram=8e9, ollama=0))
    assert "(mlx: base weights 8.1 GB 8-bit" in str(refused.value)
