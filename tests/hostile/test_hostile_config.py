"""Bad config files: `w4tui config`, `w4tui status` and a stage all stop with one line naming the file and
the key (exit 2), before any work, and never a traceback."""

from __future__ import annotations

import pytest
from conftest import assert_one_line, listing

BAD = {  # config text -> what the line must name
    "not TOML": ("[train\nlora_r = 8\n", "not valid TOML"),
    "binary garbage": (b"\x00\xff\xfe GGUF \x89PNG", "config.toml"),
    "nested too deep": ("a = " + "[" * 5000, "config.toml"),
    "unknown key": ("[train]\nlora_rank = 8\n", "unknown key 'train.lora_rank'"),
    "wrong type": ('[train]\nlora_r = "sixteen"\n', "'train.lora_r' must be an integer"),
    "epochs = inf": ("[train]\nepochs = inf\n", "'train.epochs'"),
    "epochs = nan": ("[train]\nepochs = nan\n", "'train.epochs'"),
    "learning_rate = inf": ("[train]\nlearning_rate = inf\n", "'train.learning_rate'"),
    "lora_r beyond reason": ("[train]\nlora_r = 100000\n", "'train.lora_r'"),
    "lora_alpha beyond reason": ("[train]\nlora_alpha = 1e30\n", "'train.lora_alpha'"),
    "max_seq_length beyond reason": ("[train]\nmax_seq_length = 10000000000\n", "'train.max_seq_length'"),
    "nightly epochs = inf": ("[nightly]\nepochs = inf\n", "'nightly.epochs'"),
    "a negative seed": ("[train]\nseed = -1\n", "'train.seed'"),
    "an integer past 64 bits": ("[train]\nlearning_rate = 1" + "0" * 400 + "\n", "'train.learning_rate'"),
    "a typo under [verify.expect]": (
        '[verify.expect]\n"Create a PDCA for component creatoin" = ["## Plan"]\n',
        "Create a PDCA for component creatoin",
    ),
    "[verify.expect] not strings": (
        '[verify.expect]\n"Create a PDCA for component creation" = [1]\n',
        "'verify.expect.Create a PDCA for component creation'",
    ),
    "[paths] outputs a file": ('[paths]\noutputs = "afile"\n', "'paths.outputs'"),
    "[paths] runs a file": ('[paths]\nruns = "afile"\n', "'paths.runs'"),
    "[paths] state a file": ('[paths]\nstate = "afile"\n', "'paths.state'"),
    "a table where a value goes": ("train = 3\n", "'train' must be a table"),
}


@pytest.fixture(params=list(BAD))
def bad(workspace, request):
    text, named = BAD[request.param]
    path = workspace / "config.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    (workspace / "afile").write_text("a file where a directory belongs")
    return path, named


@pytest.mark.parametrize("command", [["config"], ["status"], ["runs"]])
def test_the_cli_names_the_file_and_key(workspace, cli, bad, command):
    path, named = bad
    before = listing(workspace)
    result = cli("--config", path, *command)
    assert_one_line(result, 2, str(path), named)
    assert listing(workspace) == before


def test_a_stage_names_the_file_and_key(workspace, stage, bad, tiny_model):
    path, named = bad
    before = listing(workspace)
    result = stage("convert_gguf", "--model", tiny_model, "--output", "outputs/gguf/x.gguf")
    assert_one_line(result, 2, str(path), named)
    assert listing(workspace) == before


def test_a_config_that_is_a_directory(workspace, cli):
    result = cli("--config", workspace / "outputs", "config")
    assert_one_line(result, 2, str(workspace / "outputs"), "cannot read config file")
