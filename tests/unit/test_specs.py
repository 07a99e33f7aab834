"""Stage specs: arguments after `--` replace the config's defaults flag by flag; one input rule; the output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from core import specs
from core.config import load_config
from w4tui import cli
from w4tui.monitors import preflight
from w4tui.runs import start
from w4tui.runs.runner import Runner


@pytest.fixture
def runner(config_file):
    return Runner(load_config(config_file))


@pytest.mark.parametrize(
    ("extra", "changed"),
    [
        (["--epochs", "3"], {"epochs": 3.0}),
        (["--dataset", "mine"], {"dataset": Path("mine")}),
        (["--base-model", "x"], {"base_model": Path("x")}),
        (["--output=p"], {"output": Path("p")}),
        (["--no-gradient-checkpointing"], {"gradient_checkpointing": False}),
        ([], {}),
    ],
)
def test_each_flag_after_the_separator_replaces_the_same_default(runner, extra, changed):
    defaults = vars(runner.invocation("train").args)
    args = vars(runner.invocation("train", extra).args)
    assert args == {**defaults, **changed}


def test_the_input_named_by_the_user_wins_over_the_newest_artifact(runner):
    def latest(stage):
        return f"newest-{stage}"

    assert specs.input_for("merge", latest) == "newest-train"
    assert specs.input_for("merge", latest, {"adapter": Path("mine")}) == "mine"
    assert specs.input_for("train", latest) is None  # the config's model dir
    assert specs.input_for("deploy", latest, {"tag": "t"}) == "newest-quantize"
    # through the runner: the adapter named after -- is the input, and the output is named after it
    merge = runner.invocation("merge", ["--adapter", "/x/adapters/mine"])
    assert merge.args.adapter == Path("/x/adapters/mine") and merge.args.output.name == "mine"
    assert runner.invocation("merge", ["--adapter=/x/adapters/mine"]).args.output.name == "mine"


def test_output_is_read_from_the_specs_own_flag(config_file, tmp_path):
    config = load_config(config_file)

    def output(stage, *args):
        return specs.BY_NAME[stage].invoke(config, list(args)).output

    assert output("deploy", "--gguf", "g", "--tag", "build-1") == "build-1"
    assert output("merge", "--adapter", "a", "--base_model", "b", "--output", str(tmp_path / "m")) == str(
        tmp_path / "m"
    )
    assert output("verify", "--model", "web4-agent:b1", "--promote") == "web4-agent:b1"
    assert output("convert", "--model", "m", "--output", "rel.gguf") == str(Path("rel.gguf").resolve())


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
    monkeypatch.setattr(start, "free_memory_for_training", lambda config: None)
    monkeypatch.setattr(preflight, "check", lambda config, inv: [])  # a 7B would not fit this machine
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
