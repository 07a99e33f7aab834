"""The train stage as a torchrun group (--gpus 2) on the CPU over gloo, on the tiny model: the same
adapter as one rank with twice the accumulation (DDP, and FSDP2 with the base sharded), rank 0's files
only, a killed rank ends the run with its error (no hang), cancel checkpoints once and one rank
resumes the two ranks' checkpoint exactly (DDP's and FSDP's)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from safetensors.torch import load_file

from core.events import read_events
from w4tui.demo.samples import write_dataset

pytestmark = pytest.mark.slow
# 40 train samples, batch 2: 20 micro-batches an epoch, 4 a step -> 5 steps an epoch, 10 in all.
# Dropout stays on (0.05): its masks are drawn per micro-batch of the global step, the same on any ranks.
FAST = [
    "--max_seq_length",
    "64",
    "--batch_size",
    "2",
    "--learning_rate",
    "1e-2",
    "--eval_fraction",
    "0.1",
    "--no-gradient_checkpointing",
    "--device",
    "cpu",
    "--seed",
    "3",
    "--checkpoint_every",
    "1000",
    "--no-cache",
]
# fp32: the group adds two partial gradient sums where one rank adds them in one order; after 10 Adam
# steps at lr 1e-2 the LoRA weights (up to ~0.16) differ by at most ~6e-6. Allowed: 5e-5.
WEIGHT_TOLERANCE = 5e-5
TWO_RANKS = ["--gpus", "2", "--gradient_accumulation", "2"]
FSDP = [*TWO_RANKS, "--shard", "fsdp"]
ONE_RANK = ["--gradient_accumulation", "4"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "train.jsonl", 44, seed=5)


def command(tiny_model, dataset, output, *extra):
    return [
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


def environment(tmp_path, name):
    (tmp_path / "config.toml").touch()
    events = tmp_path / f"events-{name}.jsonl"
    return events, dict(
        os.environ, W4TUI_EVENTS=str(events), W4TUI_RUN_ID="t", W4TUI_CONFIG=str(tmp_path / "config.toml")
    )


def train(tmp_path, tiny_model, dataset, name, *extra):
    events, env = environment(tmp_path, name)
    proc = subprocess.run(
        command(tiny_model, dataset, tmp_path / name, *extra), env=env, capture_output=True, text=True, timeout=600
    )
    return proc, read_events(events)


def start(tmp_path, tiny_model, dataset, name, *extra):
    """In a session of its own, as the runner's supervisor starts a stage."""
    events, env = environment(tmp_path, name)
    proc = subprocess.Popen(
        command(tiny_model, dataset, tmp_path / name, *extra),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return proc, events


def wait_for_step(events, proc, step, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e["kind"] == "metrics" and e.get("step", 0) >= step and "loss" in e for e in read_events(events)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} (exit {proc.poll()})")


def max_difference(a, b):
    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, dataset):
    tmp = tmp_path_factory.mktemp("runs")
    one = train(tmp, tiny_model, dataset, "one", "--epochs", "2", *ONE_RANK)
    two = train(tmp, tiny_model, dataset, "two", "--epochs", "2", *TWO_RANKS)
    for proc, _ in (one, two):
        assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
    return tmp, one, two


def test_two_ranks_train_the_adapter_one_rank_trains_with_twice_the_accumulation(runs):
    tmp, (_, one_events), (two_proc, two_events) = runs
    assert max_difference(tmp / "one", tmp / "two") < WEIGHT_TOLERANCE
    losses = lambda events: [(e["step"], e["loss"]) for e in events if e["kind"] == "metrics" and "loss" in e]  # noqa: E731
    one, two = losses(one_events), losses(two_events)
    assert [s for s, _ in one] == [s for s, _ in two] == list(range(1, 11))  # the schedule follows the global step
    assert all(abs(a - b) <= 1e-4 * abs(a) for (_, a), (_, b) in zip(one, two))
    record = json.loads((tmp / "two" / "training_run.json").read_text())
    assert (record["ranks"], record["global_batch"], record["steps"]) == (2, 8, 10)
    # every sample once per epoch across the ranks: the group's count is the one rank's
    assert record["train_samples"] == json.loads((tmp / "one" / "training_run.json").read_text())["train_samples"]


def test_only_rank_0_writes(runs):
    tmp, _, (proc, events) = runs
    assert sorted(p.name for p in (tmp / "two").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "training_run.json",
    ]
    kinds = [e["kind"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("done") == 1 and kinds.count("artifact") == 1
    assert len([e for e in events if e["kind"] == "metrics" and "loss" in e]) == 10  # one per step, not per rank
    # the other rank's step lines are not copied into the log (rank 0's are)
    assert "[rank 0]" in proc.stdout and not any(
        line.startswith("[rank 1]") and " INFO " in line for line in proc.stdout.splitlines()
    )


def test_a_killed_rank_ends_the_run_with_its_error_and_no_hang(tmp_path, tiny_model, dataset):
    proc, events = start(tmp_path, tiny_model, dataset, "killed", "--epochs", "200", *TWO_RANKS)
    try:
        wait_for_step(events, proc, 2)
        rank1 = next(
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if "stages.train_lora" in " ".join(p.cmdline()) and p.environ().get("RANK") == "1"
        )
        rank1.kill()
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=90)  # bounded: a hang fails here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1
    assert time.monotonic() - started < 60
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: rank 1 stopped (killed by SIGKILL); its last log line: "), line
    errors = [e for e in read_events(events) if e["kind"] in ("error", "done")]
    assert len(errors) == 1 and errors[0]["message"].startswith("rank 1 stopped (killed by SIGKILL)")


def cancel_at(tmp_path, tiny_model, dataset, name, step, *extra):
    """Run (or resume) until ``step``, then cancel as `w4tui cancel` does: (the events, the checkpoint's step)."""
    events = tmp_path / f"events-{name}.jsonl"  # a resume's events follow the run's, as in the TUI
    already = len(read_events(events)) if events.exists() else 0
    proc, events = start(tmp_path, tiny_model, dataset, name, "--epochs", "2", *extra)
    try:
        wait_for_step(events, proc, step)
        os.killpg(proc.pid, signal.SIGINT)  # what the supervisor sends on `w4tui cancel`
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    new = read_events(events)[already:]
    checkpoints = [e for e in new if e["kind"] == "artifact" and e["type"] == "checkpoint"]
    assert len(checkpoints) == 1
    assert [e.get("status") for e in new if e["kind"] in ("done", "error")] == ["cancelled"]
    stopped = checkpoints[0]["step"]
    assert step <= stopped < 10
    return read_events(events), stopped


def losses(events):
    return [(e["step"], e["loss"]) for e in events if e["kind"] == "metrics" and "loss" in e]


def test_cancel_checkpoints_once_and_one_rank_resumes_it_exactly(runs, tmp_path, tiny_model, dataset):
    before, stopped = cancel_at(tmp_path, tiny_model, dataset, "cancelled", 3, *TWO_RANKS)
    assert [p.name for p in (tmp_path / "cancelled" / "checkpoints").iterdir()] == [f"step-{stopped:07d}"]
    resumed, after = train(tmp_path, tiny_model, dataset, "cancelled", "--epochs", "2", "--resume", *ONE_RANK)
    assert resumed.returncode == 0, resumed.stderr
    steps = [step for step, _ in losses(after[len(before) :])]  # the same events file, as in the TUI
    assert steps == list(range(stopped + 1, 11))  # continues where it stopped, not from 0
    assert max_difference(tmp_path / "cancelled", runs[0] / "one") < WEIGHT_TOLERANCE


def test_fsdp_ranks_holding_half_the_base_each_and_one_rank_take_turns_to_the_same_adapter(
    runs, tmp_path, tiny_model, dataset
):
    """2 FSDP ranks train and are cancelled, 1 rank resumes their checkpoint and is cancelled, 2 FSDP
    ranks resume that one to the end: every step's loss and the adapter are those of the one rank with
    twice the accumulation (fp32 as DDP: the base is gathered exactly; within the same 5e-5)."""
    _, first = cancel_at(tmp_path, tiny_model, dataset, "fsdp", 3, *FSDP)
    _, second = cancel_at(tmp_path, tiny_model, dataset, "fsdp", first + 2, "--resume", *ONE_RANK)
    resumed, events = train(tmp_path, tiny_model, dataset, "fsdp", "--epochs", "2", "--resume", *FSDP)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout[-3000:]
    steps, reference = losses(events), losses(runs[1][1])
    assert [step for step, _ in steps] == [step for step, _ in reference] == list(range(1, 11))  # none twice
    assert all(abs(a - b) <= 1e-4 * abs(a) for (_, a), (_, b) in zip(reference, steps))
    assert max_difference(tmp_path / "fsdp", runs[0] / "one") < WEIGHT_TOLERANCE
    record = json.loads((tmp_path / "fsdp" / "training_run.json").read_text())
    assert (record["shard"], record["ranks"], record["global_batch"], record["steps"]) == ("fsdp", 2, 8, 10)
    assert sorted(p.name for p in (tmp_path / "fsdp").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "checkpoints",
        "training_run.json",
    ]
    assert sorted(p.name for p in (tmp_path / "fsdp" / "checkpoints").iterdir()) == [
        f"step-{first:07d}",  # rank 0's of the first group
        f"step-{second:07d}",
    ]
    # what rank 0 measured of its own parameters: half the frozen base
    note = [e["message"] for e in events if e["kind"] == "log" and "fsdp: rank 0 holds" in e.get("message", "")]
    assert len(note) == 2  # both groups
    held, whole = (float(x) for x in re.search(r"holds ([\d.]+) MB of the base's ([\d.]+) MB", note[-1]).groups())
    assert abs(held / whole - 0.5) < 0.01, note[-1]


def test_a_cancel_before_the_ranks_are_up_still_reaches_them(tmp_path, tiny_model, dataset):
    proc, events = start(tmp_path, tiny_model, dataset, "early", "--epochs", "200", *TWO_RANKS)
    try:
        deadline = time.monotonic() + 60
        while not any(e["kind"] == "log" and "ranks per node" in e.get("message", "") for e in read_events(events)):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)  # torchrun is starting: no rank to tell yet
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    finals = [e for e in read_events(events) if e["kind"] in ("done", "error")]
    assert [e.get("status") for e in finals] == ["cancelled"]
    assert not any(e["kind"] == "metrics" and e.get("step", 0) > 5 for e in read_events(events))
