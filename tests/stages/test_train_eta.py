"""Training profiles and the measured ETA on the tiny model: --eta calibrates when no earlier run
matches, then uses the recorded rate of the last run with the same settings; a run's record says how
far its ETA was off."""

import json
import os
import subprocess
import sys

import pytest

from core.events import read_events
from w4tui.demo.samples import write_dataset

pytestmark = pytest.mark.slow
FAST = [
    "--max_seq_length",
    "64",
    "--batch_size",
    "4",
    "--gradient_accumulation",
    "1",
    "--eval_fraction",
    "0.1",
    "--no-gradient_checkpointing",
    "--device",
    "cpu",
    "--epochs",
    "1",
]


def train(tmp_path, model, dataset, output, *extra) -> tuple[subprocess.CompletedProcess, list[dict]]:
    events = tmp_path / f"events-{output.name}-{len(list(tmp_path.glob('events-*')))}.jsonl"
    (tmp_path / "config.toml").touch()
    env = dict(os.environ, W4TUI_EVENTS=str(events), W4TUI_RUN_ID="t", W4TUI_CONFIG=str(tmp_path / "config.toml"))
    command = [
        sys.executable,
        "-m",
        "stages.train_lora",
        "--base_model",
        str(model),
        "--dataset",
        str(dataset),
        "--output",
        str(output),
        *FAST,
        *extra,
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    return proc, read_events(events)


def done(events: list[dict]) -> dict:
    return next(e for e in events if e["kind"] == "done")


def test_eta_from_calibration_then_from_the_last_run_and_how_far_it_was_off(tmp_path, tiny_model):
    data = write_dataset(tmp_path / "train.jsonl", 150, seed=2)
    adapters = tmp_path / "adapters"
    proc, events = train(tmp_path, tiny_model, data, adapters / "first", "--eta", "--profile", "dry")
    assert proc.returncode == 0, proc.stderr
    calibrated = done(events)
    assert calibrated["eta_source"] == "calibrated on 4 steps" and calibrated["eta_s"] > 0
    assert "ETA: about 1 min, done ~" in proc.stdout and "tokens at" in proc.stdout
    assert not (adapters / "first").exists() or not any((adapters / "first").iterdir())  # nothing trained
    logs = [e["message"] for e in events if e["kind"] == "log"]
    assert logs.count("profile dry: 100 of 150 samples") == 1

    proc, events = train(tmp_path, tiny_model, data, adapters / "first", "--profile", "dry")
    assert proc.returncode == 0, proc.stderr
    first = json.loads((adapters / "first" / "training_run.json").read_text())
    assert first["train_samples"] + first["eval_samples"] == 100 and first["eta"] is None
    assert calibrated["tokens"] == first["train_tokens"]  # epochs 1: every train token once

    # the same settings: the first run's rate, no calibration
    proc, events = train(tmp_path, tiny_model, data, adapters / "second", "--eta", "--profile", "dry")
    assert proc.returncode == 0, proc.stderr
    again = done(events)
    assert again["eta_source"] == "measured by first" and again["tokens_per_second"] == round(
        first["tokens_per_second"], 1
    )
    assert again["eta_s"] == round(first["train_tokens"] / first["tokens_per_second"], 1)

    proc, events = train(tmp_path, tiny_model, data, adapters / "second", "--profile", "dry")
    assert proc.returncode == 0, proc.stderr
    second = json.loads((adapters / "second" / "training_run.json").read_text())
    off = second["eta"]
    assert off["source"] == "measured by first" and off["actual_s"] == round(second["train_seconds"], 1)
    assert off["error"] == round(second["train_seconds"] / off["eta_s"] - 1, 4)
    assert any(e["kind"] == "log" and e["message"].startswith("the ETA was ") for e in events)

    # other settings (another batch size): the first run's rate does not count
    proc, events = train(tmp_path, tiny_model, data, adapters / "third", "--eta", "--batch_size", "2")
    assert proc.returncode == 0, proc.stderr
    assert done(events)["eta_source"] == "calibrated on 4 steps"


def test_a_profile_larger_than_the_data_takes_all_of_it_and_says_so_once(tmp_path, tiny_model):
    data = write_dataset(tmp_path / "train.jsonl", 30, seed=4)
    proc, events = train(tmp_path, tiny_model, data, tmp_path / "adapters" / "mini", "--profile", "mini")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "adapters" / "mini" / "training_run.json").read_text())
    assert record["train_samples"] + record["eval_samples"] == 30 and record["args"]["profile"] == "mini"
    notes = [e["message"] for e in events if e["kind"] == "log" and e["message"].startswith("profile ")]
    assert notes == ["profile mini: the dataset has 30 samples, fewer than 3000: using all"]


def test_w4tui_run_train_eta_says_the_eta_then_asks(tmp_path, tiny_model):
    import io

    from core.config import load_config
    from w4tui.runs.estimate import eta_first
    from w4tui.runs.runner import Runner

    data = write_dataset(tmp_path / "data" / "train.jsonl", 40, seed=6)
    (tmp_path / "cfg.toml").write_text(
        f'[model]\ndir = "{tiny_model}"\n[paths]\ndata = "{data}"\n'
        "[train]\nmax_seq_length = 64\nbatch_size = 4\ngradient_accumulation = 1\ngradient_checkpointing = false\n"
        'epochs = 1\ndevice = "cpu"\n'
    )
    runner = Runner(load_config(tmp_path / "cfg.toml"))
    asked, out = [], io.StringIO()
    code = eta_first(runner, "train", [], ask=lambda q: asked.append(q) or "n", out=out)
    assert code == 0 and asked == ["start the training now? [y/N] "]
    assert "ETA: about 1 min, done ~" in out.getvalue() and "calibrated on 4 steps" in out.getvalue()
    assert runner.latest_artifact("train") is None  # nothing trained, no adapter to merge
    assert eta_first(runner, "train", [], ask=lambda q: "y", out=io.StringIO()) is None  # then it starts
    assert eta_first(runner, "merge", [], ask=lambda q: "y", out=io.StringIO()) == 2
