"""A crafted checkpoint must not run code on --resume: training state loads with weights_only=True."""

from __future__ import annotations

import os

import pytest
import torch

from core.errors import StageError
from stages.train import checkpoint


class Payload:
    """What a malicious training_state.pt carries: unpickling it would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_training_state_is_refused_and_runs_nothing(tmp_path):
    ckpt = tmp_path / "checkpoints" / "step-0000004"
    ckpt.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"optimizer": Payload(str(marker))}, ckpt / "training_state.pt")
    with pytest.raises(StageError, match=r"training_state\.pt: not a checkpoint that can be loaded safely"):
        checkpoint.load(ckpt, model=None, optimizer=None, scheduler=None, scaler=None)
    assert not marker.exists()


def test_the_saved_state_is_plain_tensors_and_values(tmp_path):
    """What save() writes loads under weights_only=True and restores every random stream exactly."""
    import random

    import numpy as np

    state = checkpoint._rng_state()
    torch.save({"rng": state}, tmp_path / "s.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    checkpoint._set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_no_shell_no_remote_code_and_loopback_by_default():
    """What the attack found held, kept: no command line goes through a shell, no model code from the Hub
    runs, and the default Ollama host is this machine only."""
    from pathlib import Path

    from core.config import default_config_path, load_config

    root = Path(__file__).resolve().parents[2]
    for path in [*root.joinpath("stages").rglob("*.py"), *root.joinpath("w4tui").rglob("*.py")]:
        text = path.read_text()
        assert "shell=True" not in text and "trust_remote_code=True" not in text, path
    assert load_config(default_config_path()).ollama.host == "http://127.0.0.1:11434"


def test_an_output_name_with_spaces_quotes_and_a_semicolon_is_taken_as_is(workspace, stage, tiny_model):
    out = workspace / "outputs" / "gguf" / 'it\'s a "build"; touch pwned.gguf'
    result = stage("convert_gguf", "--model", tiny_model, "--output", out)
    assert result.rc == 0, result.stderr
    assert out.is_file() and not list(workspace.rglob("pwned*")) and not (workspace.parent / "pwned.gguf").exists()
    assert result.of("artifact")[-1]["path"] == str(out)
