"""A stage call parsed once (core/specs.py Invocation) by the stage's own parser (core/parsers.py), and
the training settings in one list (core/trainsettings.py) that the parser, the run record, the compare
view and the ETA read."""

from __future__ import annotations

import importlib
import json
from dataclasses import fields
from pathlib import Path

import pytest

from core import eta, parsers, specs, trainsettings
from core.config import EVAL_TYPES, TrainConfig, load_config
from w4tui.nightly import record
from w4tui.runs.runner import Runner
from w4tui.ui.sources.artifacts import Artifact
from w4tui.ui.sources.compare import build_facts

REQUIRED = ["--base_model", "m", "--dataset", "d", "--output", "o"]


@pytest.fixture
def config(config_file):
    return load_config(config_file)


def test_a_setting_added_once_is_in_the_parser_the_run_record_and_the_compare_view(config, tmp_path, monkeypatch):
    new = trainsettings.Setting(
        "warmup_ratio",
        frozenset({trainsettings.RECORD, trainsettings.COMPARE}),
        help="share of the steps spent warming up",
        argparse={"type": float, "default": 0.03},
    )
    monkeypatch.setattr(trainsettings, "SETTINGS", (*trainsettings.SETTINGS, new))
    parser = specs.BY_NAME["train"].parser(config)
    assert "--warmup_ratio" in parser.format_help() and "warming up" in parser.format_help()
    args = specs.BY_NAME["train"].invoke(config, [*REQUIRED, "--warmup-ratio", "0.1"]).args
    assert args.warmup_ratio == 0.1
    # The stage writes its parsed arguments into the run record (stages/train/setup.py _save_adapter).
    adapter = tmp_path / "adapters" / "b1"
    adapter.mkdir(parents=True)
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (adapter / "training_run.json").write_text(json.dumps({"args": plain, "base_model": "m"}))
    assert record.build_fields(_TrainRun(adapter), {})["hparams"]["warmup_ratio"] == 0.1
    facts = build_facts(Artifact("adapter", str(adapter), "b1", None, None), [])
    assert facts["warmup_ratio"] == "0.1"
    assert "warmup_ratio" not in trainsettings.names(trainsettings.COST)  # only the views it names


class _TrainRun:
    """What build_fields reads of a finished train run: its stage, id and artifact events."""

    def __init__(self, adapter: Path) -> None:
        self.stage, self.id, self.adapter = "train", "r1", adapter

    def artifacts(self):
        return [{"kind": "artifact", "type": "adapter", "path": str(self.adapter)}]


def test_the_views_are_the_lists_they_replaced():
    # The lists each reader kept before the settings were one list (issue 21), as sets: the order is
    # the list's now.
    assert (
        set(trainsettings.names(trainsettings.COST))
        == set(eta.COST_ARGS)
        == {
            "max_seq_length",
            "batch_size",
            "gradient_accumulation",
            "gradient_checkpointing",
            "batching",
            "lora_r",
            "target_modules",
        }
    )
    assert set(trainsettings.names(trainsettings.RECORD)) == {
        "epochs",
        "learning_rate",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "max_seq_length",
        "replay",
        "seed",
        "batch_size",
        "gradient_accumulation",
    }
    assert trainsettings.names(trainsettings.FORM) == (
        "epochs",
        "learning_rate",
        "lora_r",
        "lora_alpha",
        "max_seq_length",
        "batch_size",
        "gradient_accumulation",
        "eval_fraction",
    )


def test_every_train_key_of_the_config_is_a_setting():
    """A [train] key without a flag, or a flag that claims a [train] key that is not there, fails here."""
    keys = {f.name for f in fields(TrainConfig)}
    assert keys <= set(trainsettings.BY_NAME)
    assert set(trainsettings.from_config()) <= keys


def test_a_call_the_stage_refuses_keeps_its_one_line_naming_the_flag(config):
    inv = specs.BY_NAME["train"].invoke(config, [*REQUIRED, "--lora_r", "abc"])
    assert inv.args is None and inv.output is None
    assert inv.error == "train_lora: argument --lora_r: invalid int value: 'abc'"
    missing = specs.BY_NAME["convert"].invoke(config, ["--bogus", "x"])
    assert missing.error == "convert_gguf: the following arguments are required: --model/--base_model, --output"
    assert specs.BY_NAME["verify"].invoke(config, ["--model", "a b"]).error.startswith("verify: argument --model:")


def test_help_is_not_parsed_and_gets_no_defaults(config_file):
    runner = Runner(load_config(config_file))
    inv = runner.invocation("train", ["--help"])
    assert inv.argv == ("--help",) and inv.args is None and inv.error is None
    assert inv.command[-3:] == ["-m", "stages.train_lora", "--help"]


@pytest.mark.parametrize("spec", specs.STAGES + specs.EXTRA, ids=lambda s: s.name)
def test_the_stage_parses_with_the_specs_parser(config, spec):
    """`python -m <module>` and the runner's invocation read a command line with the one parser."""
    stage = importlib.import_module(spec.module)
    assert stage.build_parser().format_help() == spec.parser(config).format_help()
    dests = {a.dest for a in spec.parser(config)._actions}
    assert spec.output_flag[2:] in dests and (spec.input_flag is None or spec.input_flag[2:] in dests)


def test_given_is_only_what_was_typed(config):
    parser = specs.BY_NAME["merge"].parser(config)
    assert parser.given(["--adapter=a", "--dtype", "f16"]) == {"adapter": Path("a"), "dtype": "f16"}
    assert parser.given([]) == {}
    assert parser.given(["--dtype", "int3"]) == {}  # the full parse names the mistake
    assert parser.given(["--help"]) == {}
    assert parser.parse_args(["--adapter", "a", "--base_model", "b", "--output", "o"]).dtype == "auto"  # restored


def test_the_core_lists_match_the_stages():
    from stages.merge_lora import OUT_DTYPES
    from stages.quant.mix import FTYPES

    assert tuple(FTYPES) == EVAL_TYPES and parsers.OUTTYPES[4:] == EVAL_TYPES
    assert tuple(OUT_DTYPES) == parsers.MERGE_DTYPES
