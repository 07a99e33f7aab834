"""Misusing the command line: unknown or missing flags are usage mistakes (exit 2, one line); a reader
that closes the pipe early (`| head`) is normal and shows no BrokenPipeError."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, assert_one_line, listing

REQUIRED = {  # each stage with its required flags, so the unknown one is what argparse stops at
    "download": ["--repo", "r", "--output", "o"],
    "train_lora": ["--base_model", "m", "--dataset", "d", "--output", "o"],
    "merge_lora": ["--adapter", "a", "--base_model", "m", "--output", "o"],
    "convert_gguf": ["--model", "m", "--output", "o.gguf"],
    "quantize": ["--input", "i.gguf", "--output", "o.gguf"],
    "deploy_ollama": ["--gguf", "g.gguf", "--tag", "t"],
    "verify": ["--model", "m"],
}


@pytest.mark.parametrize("module", list(REQUIRED))
def test_an_unknown_stage_flag_is_a_usage_mistake(workspace, stage, module):
    before = listing(workspace)
    result = stage(module, *REQUIRED[module], "--outptu", "x")
    assert_one_line(result, 2, "--outptu")
    assert listing(workspace) == before


@pytest.mark.parametrize("module", ["merge_lora", "convert_gguf", "quantize"])
def test_a_missing_required_flag_is_a_usage_mistake(workspace, stage, module):
    before = listing(workspace)
    result = stage(module)
    assert_one_line(result, 2, "required")
    assert listing(workspace) == before


def test_a_flag_with_a_bad_value_is_a_usage_mistake(workspace, stage):
    result = stage("train_lora", "--base_model", "m", "--dataset", "d", "--output", "o", "--epochs", "many")
    assert_one_line(result, 2, "--epochs", "many")


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e9"])
def test_epochs_from_the_command_line_are_checked_like_the_config(workspace, stage, tiny_model, value):
    (workspace / "d.jsonl").write_text('{"text": "hi"}\n')
    result = stage(
        "train_lora",
        "--base_model",
        tiny_model,
        "--dataset",
        "d.jsonl",
        "--output",
        "outputs/adapters/o",
        "--epochs",
        value,
    )
    assert_one_line(result, 2, "--epochs", "must be")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "trian"], "invalid choice: 'trian'"),
        (["logs", "no-such-run"], "no-such-run"),
        (["cancel", "no-such-run"], "no-such-run"),
    ],
)
def test_cli_misuse_is_one_line_and_exit_2(workspace, cli, argv, named):
    before = listing(workspace)
    result = cli(*argv)
    assert result.rc == 2 and "Traceback" not in result.stderr, result.stderr
    assert named in result.stderr and listing(workspace) == before


def closed_stdout(*cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` with a stdout pipe whose reader is already gone, as after ``| head -0``."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            cmd,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=120,
            env=dict(os.environ, **(env or {})),
        )
    finally:
        os.close(write)


@pytest.mark.parametrize("argv", [["runs"], ["status"], ["config"], ["--help"]])
def test_the_cli_into_a_closed_pipe(workspace, argv):
    proc = closed_stdout(sys.executable, "-m", "w4tui", *argv)
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_a_stage_into_a_closed_pipe_still_does_its_work(workspace, tiny_model):
    out = workspace / "outputs" / "gguf" / "t-f16.gguf"
    proc = closed_stdout(sys.executable, "-m", "stages.convert_gguf", "--model", str(tiny_model), "--output", str(out))
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    assert proc.returncode == 0 and out.is_file(), proc.stderr


def test_a_failing_stage_into_a_closed_pipe_shows_only_its_error(workspace):
    proc = closed_stdout(sys.executable, "-m", "stages.quantize", "--input", "missing.gguf", "--output", "o.gguf")
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: missing.gguf: no such file (run the convert stage first)"
    ]


def test_a_bad_stage_flag_through_w4tui_run_is_exit_2(workspace):
    proc = subprocess.run(
        [sys.executable, "-m", "w4tui", "run", "convert", "--wait", "--no-defaults", "--", "--bogus", "x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "error: convert_gguf: the following arguments are required" in proc.stdout
    assert not (workspace / "outputs" / "gguf").exists()
