"""Following a run from the shell (issue 13): the progress bar's figures, `w4tui status`, `w4tui config`,
and `w4tui runs` into a pipe that closes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import tui_workspace as ws
from tui_helpers import recorded, utc  # noqa: F401

from w4tui.runs.follow import follow
from w4tui.runs.runner import Runner


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def w4tui(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w4tui", *args], capture_output=True, text=True, **kwargs)


def test_the_progress_bar_shows_loss_tokens_per_second_and_eta_beside_it(recorded, monkeypatch):
    monkeypatch.setattr("shutil.get_terminal_size", lambda *a: os.terminal_size((100, 24)))
    runner = Runner(recorded)
    out = FakeTTY()
    assert follow(runner, runner.get("train"), out=out, poll_s=0) == "succeeded"
    bars = [part.removesuffix("\x1b[K") for part in out.getvalue().split("\r") if part.startswith("[train]")]
    assert len(bars) >= 100  # a metrics and a progress event per step
    # A progress event between two reports keeps the figures (it used to wipe them).
    step_10 = [b for b in bars if " 10/50 steps" in b]
    assert step_10 and all(re.search(r"loss \d\.\d{4}  \d{3} tok/s  ETA 20m00s", b) for b in step_10), step_10
    assert all(len(b) <= 99 for b in bars)
    narrow = FakeTTY()
    monkeypatch.setattr("shutil.get_terminal_size", lambda *a: os.terminal_size((80, 24)))
    follow(runner, runner.get("train"), out=narrow, poll_s=0)
    last = [p for p in narrow.getvalue().split("\r") if p.startswith("[train]")][-1].removesuffix("\x1b[K")
    assert "50/50 steps  loss 0.6887  862 tok/s  ETA 0m00s" in last and len(last) <= 79  # the bar shrank


def test_status_shows_end_times_last_loss_and_build_tags(recorded):
    proc = w4tui("--config", str(recorded.file), "status")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert "2025-11-26 18:25" in lines["train"] and "loss 0.6887" in lines["train"] and "step 50/50" in lines["train"]
    assert "adapters/" + ws.BUILD in lines["train"]
    assert f"web4-agent:build-{ws.OLD}" in lines["deploy"] and "2025-11-25" in lines["deploy"]
    assert "passed, promoted to latest" in lines["verify"]
    assert "no space left on device" in lines["convert"] and "failed" in lines["convert"]
    assert "never run" in lines["quantize"]
    assert f"served as web4-agent:latest: web4-agent:build-{ws.OLD}" in proc.stdout


def test_config_prints_each_value_in_effect_and_the_file_that_set_it(recorded, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    proc = w4tui("--config", str(recorded.file), "config")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"# config: {recorded.file}" in out
    assert f"max_seq_length = 64    # {recorded.file}" in out  # set by the workspace's config.toml
    assert "lora_r = 16    # default" in out
    assert f'outputs = "{recorded.paths.outputs}"    # {recorded.file}' in out  # paths resolved
    assert "OLLAMA_HOST=http://127.0.0.1:9 is used instead" in out
    sections = [line for line in out.splitlines() if line.startswith("[")]
    assert sections[:3] == ["[model]", "[paths]", "[train]"]
    bad = recorded.file.parent / "bad.toml"
    bad.write_text("[train]\nepochs = 'three'\n")
    refused = w4tui("--config", str(bad), "config")
    assert refused.returncode == 2 and "'train.epochs' must be a number" in refused.stderr


def test_runs_into_a_pipe_that_closed_is_quiet(recorded):
    """`w4tui runs | head -1` ended in a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    proc = subprocess.run(
        [sys.executable, "-m", "w4tui", "--config", str(recorded.file), "runs"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_status_after_a_rollback_names_what_latest_serves_now(recorded, monkeypatch):
    # status said the last verify's promoted build was served, long after `w4tui rollback` moved latest.
    from ollama_standin import OllamaStandIn

    with OllamaStandIn(version="0.33.0") as ollama:
        monkeypatch.setenv("OLLAMA_HOST", ollama.url)
        for build in ("a", "b"):
            ollama.add_model(f"web4-agent:build-{build}", system=f"build {build}")
        ollama.models["web4-agent:previous"] = dict(ollama.models["web4-agent:build-a"])
        ollama.models["web4-agent:latest"] = dict(ollama.models["web4-agent:build-b"])
        rolled = w4tui("--config", str(recorded.file), "rollback")
        assert rolled.returncode == 0 and "rolled back to web4-agent:previous" in rolled.stdout, rolled.stderr
    status = w4tui("--config", str(recorded.file), "status").stdout
    assert "served as web4-agent:latest: web4-agent:build-a (rolled back " in status, status
    assert f"served as web4-agent:latest: web4-agent:build-{ws.OLD}" not in status
