"""Stage specs: arguments after `--` override the config's defaults flag by flag; one input rule."""

from __future__ import annotations

import sys

import pytest

from core import specs
from core.config import load_config
from w4tui import cli
from w4tui.runs.runner import Runner

DEFAULTS = ["--base_model", "m", "--dataset", "d", "--output", "o", "--promote"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--epochs", "3"], DEFAULTS + ["--epochs", "3"]),
        (["--dataset", "mine"], ["--base_model", "m", "--dataset", "mine", "--output", "o", "--promote"]),
        (["--base-model", "x"], ["--base-model", "x", "--dataset", "d", "--output", "o", "--promote"]),
        (["--output=p"], ["--base_model", "m", "--dataset", "d", "--output", "p", "--promote"]),
        (["--no-promote"], ["--base_model", "m", "--dataset", "d", "--output", "o", "--no-promote"]),
        ([], DEFAULTS),
    ],
)
def test_each_flag_after_the_separator_replaces_the_same_default(extra, expected):
    assert specs.override(DEFAULTS, extra) == expected


def test_the_input_named_by_the_user_wins_over_the_newest_artifact():
    def latest(stage):
        return f"newest-{stage}"

    assert specs.input_for("merge", latest) == "newest-train"
    assert specs.input_for("merge", latest, ["--adapter", "mine"]) == "mine"
    assert specs.input_for("train", latest) is None  # the config's model dir
    assert specs.input_for("deploy", latest, ["--tag", "t"]) == "newest-quantize"


def test_output_is_read_from_the_specs_own_flag(tmp_path):
    assert specs.output_of("deploy", ["--gguf", "g", "--tag", "build-1"]) == "build-1"
    assert specs.output_of("merge", ["--output", str(tmp_path / "m")]) == str(tmp_path / "m")
    assert specs.output_of("verify", ["--model", "web4-agent:b1", "--promote"]) == "web4-agent:b1"


def test_a_deployed_build_is_named_after_its_gguf(config_file):
    args = specs.default_args("deploy", load_config(), "/x/gguf/20261001-2130-Q4_K_M.gguf", "20261201-101500")
    assert args[args.index("--tag") + 1] == "build-20261001-2130-Q4_K_M"


def test_w4tui_run_train_with_one_flag_keeps_every_default(config_file, monkeypatch, capsys):
    """`w4tui run train -- --epochs 3`, the example of `w4tui run --help`, used to drop every default."""
    started = {}

    def record(self, stage, command, **kw):
        started.update(stage=stage, command=command)
        raise SystemExit(0)

    monkeypatch.setattr(Runner, "start_command", record)
    monkeypatch.setattr(Runner, "_free_memory_for_training", lambda self: None)
    monkeypatch.setattr(Runner, "_preflight", lambda self, stage, args: [])  # a 7B would not fit this machine
    with pytest.raises(SystemExit):
        cli.main(["run", "train", "--", "--epochs", "3"])
    command = started["command"]
    assert command[:3] == [sys.executable, "-m", "stages.train_lora"]
    for flag in ("--base_model", "--dataset", "--output"):
        assert flag in command
    assert command[-2:] == ["--epochs", "3"]
    with pytest.raises(SystemExit):
        cli.main(["run", "train", "--no-defaults", "--", "--epochs", "3"])
    assert started["command"][3:] == ["--epochs", "3"]
