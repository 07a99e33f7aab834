"""`w4tui pipeline` survives its terminal: a dropped SSH session must not stop the chain between stages."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time

from core.config import load_config
from w4tui.runs.runner import Runner


def test_closing_the_terminal_of_w4tui_pipeline_lets_the_next_stages_start(tmp_path):
    demo = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "w4tui", "demo", "init", str(demo)], check=True, capture_output=True)
    config = demo / "config.toml"
    config.write_text(
        config.read_text().replace("max_seq_length = 256", "max_seq_length = 64").replace("epochs = 1", "epochs = 0.1")
    )
    runner = Runner(load_config(config))
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "w4tui", "--config", str(config), "pipeline", "--to", "merge"])
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(r.stage == "train" and r.live for r in runner.runs()):
        try:
            seen += os.read(fd, 4096)
        except OSError:
            break
    assert any(r.stage == "train" for r in runner.runs()), seen.decode(errors="replace")[-2000:]
    os.close(fd)  # the terminal goes away while train runs: the CLI that followed it dies
    os.killpg(pid, signal.SIGHUP)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and runner.get("pipeline").live:
        time.sleep(0.5)
    job = runner.get("pipeline")
    assert job.status == "succeeded", job.log_tail(20)
    merge = runner.get("merge")  # started after the terminal closed, by the detached job
    assert merge.status == "succeeded" and merge.started > runner.get("train").started
