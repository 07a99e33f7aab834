"""The train stage end to end on the tiny Qwen2 model: learning, PEFT compatibility, exact resume
after kill -9, Ctrl-C checkpointing, nightly (incremental) mode."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

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
    "--learning_rate",
    "1e-2",
    "--eval_fraction",
    "0.1",
    "--no-gradient_checkpointing",
    "--device",
    "cpu",
    "--seed",
    "3",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_dataset(root / "train.jsonl", 44, seed=5), write_dataset(root / "incremental.jsonl", 12, seed=9)


def train(tmp_path, tiny_model, dataset, output, *extra, wait=True):
    events = tmp_path / f"events-{output.name}-{time.monotonic_ns()}.jsonl"
    env = dict(os.environ, W4TUI_EVENTS=str(events), W4TUI_RUN_ID="t", W4TUI_CONFIG=str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").touch()
    cmd = [
        sys.executable,
        "-m",
        "stages.train_lora",
        "--base_model",
        str(tiny_model),
        "--dataset",
        str(dataset),
        "--output",
        str(output),
        *FAST,
        *extra,
    ]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), events
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return proc, read_events(events)


def metrics(events):
    return [e for e in events if e["kind"] == "metrics" and "loss" in e]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, data):
    tmp = tmp_path_factory.mktemp("run")
    proc, events = train(tmp, tiny_model, data[0], tmp / "adapter", "--epochs", "2", "--checkpoint_every", "4")
    assert proc.returncode == 0, proc.stderr
    (tmp / "output.log").write_text(proc.stdout)  # the runner's output.log is the stage's stdout
    return tmp / "adapter", events


def test_loss_decreases_and_events_carry_the_documented_keys(trained):
    adapter, events = trained
    steps = metrics(events)
    assert len(steps) == 20 and steps[-1]["step"] == steps[-1]["total_steps"] == 20
    assert sum(e["loss"] for e in steps[-4:]) / 4 < 0.8 * sum(e["loss"] for e in steps[:4]) / 4
    for key in ("epoch", "learning_rate", "grad_norm", "tokens_per_second", "eta_s", "device"):
        assert key in steps[-1]
    assert any("eval_loss" in e for e in events)
    checkpoints = [e for e in events if e["kind"] == "artifact" and e["type"] == "checkpoint"]
    assert [e["step"] for e in checkpoints] == [4, 8, 12, 16]
    final = [e for e in events if e["kind"] == "artifact" and e["type"] == "adapter"]
    assert final[-1]["path"] == str(adapter) and events[-1] == {**events[-1], "kind": "done", "status": "succeeded"}
    record = json.loads((adapter / "training_run.json").read_text())
    assert (
        record["steps"] == 20 and record["samples"] == 44 and record["train_samples"] == 40 and len(record["data"]) == 1
    )
    assert record["args"]["lora_r"] == 16 and record["final_loss"] == pytest.approx(steps[-1]["loss"], rel=1e-3)
    assert [step for step, _ in record["loss_history"]] == list(range(1, 21)) and record["parent"] == record[
        "base_model"
    ]
    done = events[-1]
    assert (done["steps"], done["samples"], done["truncated"], done["skipped"]) == (20, 40, record["truncated"], 0)
    assert done["final_loss"] == record["final_loss"] and done["tokens"] == record["train_tokens"] > 0
    assert sorted(p.name for p in (adapter / "checkpoints").iterdir()) == ["step-0000012", "step-0000016"]


def test_the_log_has_a_human_line_per_report_from_the_same_metrics(trained):
    adapter, events = trained
    log = (adapter.parent / "output.log").read_text().splitlines()
    lines = [line for line in log if " | loss " in line]
    steps = metrics(events)
    assert len(lines) == len(steps) == 20
    for line, e in zip(lines, steps):
        assert f"step {e['step']}/20 (" in line and f"| loss {e['loss']:.4f} |" in line, line
        assert f"| lr {e['learning_rate']:.2e} |" in line and " tok/s | ETA " in line, line
    evals = [e for e in events if e["kind"] == "metrics" and "eval_loss" in e]
    assert [line.split("eval_loss ")[1] for line in log if "eval_loss" in line] == [
        f"{e['eval_loss']:.4f}" for e in evals
    ]


def test_adapter_loads_in_peft_and_changes_the_output(trained, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter, _ = trained
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (16, 32) and config["base_model_name_or_path"] == str(tiny_model)
    ids = torch.tensor([[151644, 872, 198, 4021, 264, 393, 5626, 32, 151645, 198, 151644, 77091, 198]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, adapter)
    after = tuned(ids).logits
    assert (after - before).abs().max() > 0.1


def test_kill_9_then_resume_ends_where_an_uninterrupted_run_does(tmp_path, trained, tiny_model, data):
    _, reference = trained
    output = tmp_path / "adapter"
    proc, events_path = train(
        tmp_path, tiny_model, data[0], output, "--epochs", "2", "--checkpoint_every", "4", wait=False
    )
    deadline = time.monotonic() + 120
    while not any(e["kind"] == "artifact" and e.get("step") == 8 for e in read_events(events_path)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (output / "adapter_model.safetensors").exists()
    resumed, events = train(
        tmp_path, tiny_model, data[0], output, "--epochs", "2", "--checkpoint_every", "4", "--resume"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(events)[0]["step"] > 8  # it continued; it did not start over
    ref, got = metrics(reference)[-1], metrics(events)[-1]
    assert got["step"] == ref["step"] == 20
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6)
    # Resuming with flags that change the run is refused before any model loads.
    changed, _ = train(
        tmp_path, tiny_model, data[0], output, "--epochs", "2", "--checkpoint_every", "4", "--resume", "--lora_r", "8"
    )
    assert changed.returncode == 1 and "was trained with --lora_r 16; cannot resume exactly" in changed.stderr


def test_ctrl_c_saves_a_checkpoint_and_ends_cancelled(tmp_path, tiny_model, data):
    output = tmp_path / "adapter"
    proc, events_path = train(
        tmp_path, tiny_model, data[0], output, "--epochs", "3", "--checkpoint_every", "100", wait=False
    )
    deadline = time.monotonic() + 120
    while not metrics(read_events(events_path)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    events = read_events(events_path)
    assert events[-1]["kind"] == "done" and events[-1]["status"] == "cancelled"
    saved = [e for e in events if e["kind"] == "artifact" and e["type"] == "checkpoint"]
    assert len(saved) == 1 and (output / "checkpoints" / f"step-{saved[0]['step']:07d}" / "state.json").exists()


def test_incremental_run_starts_from_the_adapter_and_records_its_parent(tmp_path, trained, tiny_model, data):
    from safetensors.torch import load_file

    parent, _ = trained
    output = tmp_path / "nightly"
    proc, events = train(
        tmp_path,
        tiny_model,
        data[1],
        output,
        "--resume_from",
        str(parent),
        "--epochs",
        "1",
        "--learning_rate",
        "1e-4",
        "--replay",
        "0.5",
        "--replay_dataset",
        str(data[0]),
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((output / "training_run.json").read_text())
    assert record["parent"] == str(parent) and record["replayed"] == 12
    artifact = [e for e in events if e["kind"] == "artifact" and e["type"] == "adapter"][-1]
    assert artifact["parent"] == str(parent)
    old, new = load_file(parent / "adapter_model.safetensors"), load_file(output / "adapter_model.safetensors")
    assert old.keys() == new.keys()
    assert any(not torch.equal(old[k], new[k]) for k in old)
    # A fresh optimizer at a small learning rate: close to the parent, not a new random adapter.
    key = next(k for k in old if "lora_B" in k)
    assert (new[key] - old[key]).abs().max() < 0.1 * old[key].abs().max()


def test_bad_flags_and_inputs_are_one_line(tmp_path, tiny_model, data):
    proc, _ = train(tmp_path, tiny_model, tmp_path / "missing.jsonl", tmp_path / "o")
    assert proc.returncode == 1 and proc.stderr.strip().startswith(f"error: {tmp_path / 'missing.jsonl'}: no such file")
    proc, _ = train(tmp_path, tmp_path, data[0], tmp_path / "o")
    assert "not a Hugging Face model directory" in proc.stderr and "Traceback" not in proc.stderr
    proc, _ = train(tmp_path, tiny_model, data[0], tmp_path / "o", "--resume")
    assert "no checkpoint to resume from" in proc.stderr
    proc, _ = train(tmp_path, tiny_model, data[0], tmp_path / "o", "--lora_r", "0")
    assert proc.returncode == 2 and "--lora_r must be greater than 0" in proc.stderr  # a usage mistake


def test_a_new_run_never_mixes_with_an_old_one(tmp_path, trained, tiny_model, data):
    adapter, _ = trained
    proc, _ = train(tmp_path, tiny_model, data[0], adapter)
    assert proc.returncode == 1 and f"error: {adapter}: already holds a training run" in proc.stderr
    assert "add --resume" in proc.stderr
