"""A workspace deleted under a running training (issue 22 part 3a): its run can no longer be cancelled by
its file nor followed, so the supervisor stops the stage itself; and another training's pre-flight, which
cannot read that training's base any more, says so instead of taking it for the default 7B model."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import types
from pathlib import Path

import pytest

from core import specs
from core.config import load_config
from w4tui.monitors import preflight
from w4tui.runs.runner import RunError, Runner

FAKE = str(Path(__file__).parents[1] / "support" / "fake_stage.py")
TINY = '{"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 1000, "num_attention_heads": 4}'


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie: ended, not yet reaped by its supervisor
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_a_run_whose_directory_is_removed_is_stopped(config_file):
    runner = Runner(load_config())
    run = runner.start_command("fake", [sys.executable, FAKE, "--steps", "2000", "--sleep", "0.05"])
    deadline = time.monotonic() + 15
    while not runner.get(run.id).events() and time.monotonic() < deadline:
        time.sleep(0.05)
    stage, supervisor = run.pid, runner.get(run.id).record["supervisor_pid"]
    shutil.rmtree(run.dir)
    try:
        deadline = time.monotonic() + 10
        while not (gone(stage) and gone(supervisor)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(stage), "the stage trains on in a deleted workspace"
        assert gone(supervisor) and not run.dir.exists()  # nothing recreated the folder to record into
    finally:
        for pid in (stage, supervisor):  # a failure leaves neither running on the test machine
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


class Probe:
    def __init__(self, trainings, held=0):
        self._trainings, self.held = trainings, held

    def resident(self, pid):
        return self.held

    def free_disk(self, path):
        return 10**12

    def memory(self, requested):
        return "cpu", 40 * 10**9, 64 * 10**9, "free RAM"

    def ollama_loaded(self, on_gpu=False):
        return 0

    def backend(self, requested):
        return "torch"

    def working_set(self, total):
        return None

    def trainings(self):
        return self._trainings

    def power(self):
        return None


def test_a_training_whose_base_is_gone_is_not_taken_for_a_7b(config_file, tmp_path):
    """It is counted at the memory it holds now, and the refusal says why, never a made-up 23.8 GB."""
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(TINY)
    runner = types.SimpleNamespace(config=load_config())
    config = runner.config
    # this training, as `w4tui run train -- --base_model TINY` calls it
    mine = specs.BY_NAME["train"].invoke(
        config, specs.default_args("train", config, None, "b") + ["--base_model", str(tmp_path / "tiny")]
    )
    deleted = tmp_path / "deleted-ws" / "models" / "tiny"
    other = [(4242, [sys.executable, "-m", "stages.train_lora", "--base-model", str(deleted), "--output", "/x/a"])]
    assert preflight.check(config, mine, probe=Probe(other, held=2 * 10**9)) == []  # 2 GB + tiny fit
    with pytest.raises(RunError) as refused:
        preflight.check(config, mine, probe=Probe(other, held=63 * 10**9))
    text = str(refused.value)
    assert text.startswith("another training is running on this machine (pid 4242, ~63.0 GB) (pid 4242: its base ")
    assert f"its base model {deleted} cannot be read (No such file or directory); counted at the 63.0 GB" in text
    assert "23.8 GB" not in text
