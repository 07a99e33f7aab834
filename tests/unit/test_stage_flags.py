"""One flag style per stage program: the help shows snake_case, and either spelling is accepted."""

import importlib
import pkgutil
import re

import pytest

import stages
from core.errors import StageError
from core.parsers import StageArgumentParser

PROGRAMS = sorted(m.name for m in pkgutil.iter_modules(stages.__path__) if not m.ispkg)


def test_the_programs_are_the_stages_top_level():
    assert {"download", "train_lora", "merge_lora", "convert_gguf", "quantize", "deploy_ollama", "verify"} <= set(
        PROGRAMS
    )


def command_line(parser, spell) -> list[str]:
    """Every flag of ``parser`` once, spelled by ``spell``, with a value its type and choices accept."""
    args = []
    for action in parser._actions:
        flags = [s for s in action.option_strings if s.startswith("--") and s != "--help"]
        if not flags:
            continue
        args.append(spell(flags[-1]))
        if action.nargs != 0:
            args.append(value_for(action))
    return args


def value_for(action) -> str:
    if action.choices:
        return str(list(action.choices)[0])
    default = action.default[0] if isinstance(action.default, (list, tuple)) and action.default else action.default
    return "1" if default in (None, "", True, False) else str(default)


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_shows_one_spelling_and_both_parse_the_same(program, config_file):
    parser = importlib.import_module(f"stages.{program}").build_parser()
    assert isinstance(parser, StageArgumentParser)
    assert not re.findall(r"--[a-z0-9]+-[a-z0-9]", parser.format_help())  # no --kebab-case in the help
    snake = parser.parse_args(command_line(parser, lambda flag: flag))
    kebab = parser.parse_args(command_line(parser, lambda flag: flag.replace("_", "-")))
    assert kebab == snake


def test_train_flags_users_type_in_either_spelling(config_file):
    from stages.train_lora import build_parser

    required = ["--base_model", "m", "--dataset", "d", "--output", "o"]
    args = build_parser().parse_args(
        required + ["--learning-rate", "1e-4", "--lora-r=4", "--skip-bad", "--no-cache", "--no-gradient-checkpointing"]
    )
    assert (args.learning_rate, args.lora_r, args.skip_bad, args.cache, args.gradient_checkpointing) == (
        1e-4,
        4,
        True,
        False,
        False,
    )
    assert build_parser().parse_args(required + ["--skip_bad", "--no_cache"]).cache is False
    assert build_parser().parse_args(["--base-m", "x", *required[2:]]).base_model.name == "x"  # abbreviated
    with pytest.raises(StageError, match="unrecognized arguments: --no-such-flag"):
        build_parser().parse_args(required + ["--no-such-flag"])


def test_after_a_double_dash_nothing_is_respelled():
    parser = StageArgumentParser(prog="t")
    parser.add_argument("--base_model")
    parser.add_argument("rest", nargs="*")
    assert parser.parse_args(["--base-model", "m", "--", "--base-model"]).rest == ["--base-model"]
