"""Exactly one scheduler across processes: two `w4tui daemon`s, one holds and the other is read-only
and names the holder; kill -9 the holder and the other takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from core.config import load_config
from w4tui.nightly.lock import SchedulerLock, describe_holder


def start_daemon(config_file, log):
    return subprocess.Popen(
        [sys.executable, "-m", "w4tui", "--config", str(config_file), "daemon", "--poll", "0.2"],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_one_holder_the_other_read_only_and_takes_over_after_kill_9(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text("")
    lock = SchedulerLock(load_config(config_file).paths.state)
    first = start_daemon(config_file, tmp_path / "first.log")
    second = None
    try:
        assert wait_for(lambda: (lock.holder() or {}).get("pid") == first.pid), (tmp_path / "first.log").read_text()
        assert lock.holder()["kind"] == "daemon"
        second = start_daemon(config_file, tmp_path / "second.log")
        assert wait_for(lambda: "read-only" in (tmp_path / "second.log").read_text())
        assert f"held by daemon pid {first.pid}" in (tmp_path / "second.log").read_text()
        assert not lock.acquire("test")  # nor can anyone else take it
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert wait_for(lambda: (lock.holder() or {}).get("pid") == second.pid), (tmp_path / "second.log").read_text()
        # it says so once the scheduler is started after taking the lock (not at the same instant)
        assert wait_for(lambda: "holding the scheduler" in (tmp_path / "second.log").read_text())
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    assert lock.holder() is None and describe_holder(None) == "nobody holds the scheduler"
