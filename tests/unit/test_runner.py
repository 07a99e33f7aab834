"""Runner lifecycle with a small fake stage: real detached processes, real signals."""

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import load_config
from w4tui.runs.runner import RunError, Runner

FAKE = str(Path(__file__).parents[1] / "support" / "fake_stage.py")


def wait_until(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def runner(config_file):
    return Runner(load_config())


def start(runner, *args, **kw):
    return runner.start_command("fake", [sys.executable, FAKE, *args], **kw)


def finished(runner, run, timeout=15.0):
    return wait_until(lambda: (r := runner.get(run.id)) and not r.live and r, timeout, f"{run.id} to end")


def test_success_records_events_log_and_exit(runner):
    run = start(runner, "--steps", "3", "--output", "out")
    assert run.status in ("running", "succeeded") and run.pid
    run = finished(runner, run)
    assert run.status == "succeeded" and run.record["exit_code"] == 0
    progress = [e for e in run.events() if e["kind"] == "progress"]
    assert [(e["done"], e["total"]) for e in progress] == [(1, 3), (2, 3), (3, 3)]
    assert all(e["run"] == run.id for e in progress)
    assert run.artifacts()[0]["path"] == "out"
    assert "step 3" in run.log_path.read_text()
    assert run.ended >= run.started


def test_failure_keeps_the_error_event(runner):
    run = finished(runner, start(runner, "--fail"))
    assert run.status == "failed" and run.record["exit_code"] == 1
    assert run.error()["message"] == "fake failure: the input is wrong"


def test_exit_without_final_event_is_a_crash(runner):
    assert finished(runner, start(runner, "--crash")).status == "crashed"


def test_sigkill_is_a_crash(runner):
    run = start(runner, "--steps", "400", "--sleep", "0.05")
    wait_until(lambda: runner.get(run.id).events(), what="first event")
    os.kill(run.pid, signal.SIGKILL)
    run = finished(runner, run)
    assert run.status == "crashed" and run.record["exit_code"] == -signal.SIGKILL


def test_cancel_sends_sigint_and_the_stage_ends_cancelled(runner):
    run = start(runner, "--steps", "400", "--sleep", "0.05")
    wait_until(lambda: runner.get(run.id).events(), what="first event")
    runner.cancel(run.id[:20])
    assert runner.get(run.id).status in ("cancelling", "cancelled")
    run = finished(runner, run)
    assert run.status == "cancelled" and run.record["exit_code"] == 130
    with pytest.raises(RunError, match="is not running"):
        runner.cancel(run.id)


def test_cancel_escalates_on_a_stage_that_ignores_signals(runner):
    run = start(runner, "--steps", "400", "--sleep", "0.05", "--stubborn", cancel_grace_s=0.3, kill_after_s=0.3)
    wait_until(lambda: len(runner.get(run.id).events()) > 2, what="stubborn stage to run")
    runner.cancel(run.id)
    run = finished(runner, run)
    assert run.status == "cancelled" and run.record["exit_code"] == -signal.SIGKILL


def test_conflicting_output_is_refused_while_live(runner):
    run = start(runner, "--steps", "400", "--sleep", "0.05", "--output", "same", output="same")
    with pytest.raises(RunError, match=f"fake run {run.id} is still writing to .*same") as refused:
        start(runner, "--output", "same", output="same")
    assert str(refused.value).endswith(f"cancel it: w4tui --config {runner.config.file} cancel {run.id}")
    start(runner, "--steps", "1", "--output", "other", output="other")  # a different output is fine
    runner.cancel(run.id)
    finished(runner, run)
    finished(runner, start(runner, "--steps", "1", "--output", "same", output="same"))  # free again once it ended


def test_another_process_sees_the_same_live_run(runner, config_file):
    run = start(runner, "--steps", "400", "--sleep", "0.05")
    out = subprocess.run(
        [sys.executable, "-m", "w4tui", "status", "--json"], capture_output=True, text=True, check=True
    ).stdout
    listed = {r["id"]: r for r in json.loads(out)["runs"]}
    assert listed[run.id]["status"] == "running" and listed[run.id]["pid"] == run.pid
    assert Runner(load_config()).get(run.id).live  # a second runner instance in this process too
    runner.cancel(run.id)
    finished(runner, run)


def test_terminal_hangup_leaves_the_stage_running(runner, config_file, tmp_path):
    """Close the launching terminal (SIGHUP to its session); the run goes on and ends normally."""
    ready = tmp_path / "run-id"
    script = (
        # a shell's child: hangup at its default, whatever this test process inherited or set
        "import signal; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP}); "
        "import sys, time; from core.config import load_config; from w4tui.runs.runner import Runner; "
        f"run = Runner(load_config()).start_command('fake', [sys.executable, {FAKE!r}, '--steps', '30', "
        f"'--sleep', '0.1']); open({str(ready)!r}, 'w').write(run.id); time.sleep(60)"
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: a "shell" on a real terminal, following its run
        os.execv(sys.executable, [sys.executable, "-c", script])
    run_id = wait_until(lambda: ready.exists() and ready.read_text(), what="launcher to start the run")
    os.close(fd)  # the terminal goes away: the kernel hangs up its session
    os.killpg(pid, signal.SIGHUP)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP
    assert runner.get(run_id).status == "running"
    assert finished(runner, runner.get(run_id), timeout=30).status == "succeeded"


def test_dead_supervisor_falls_back_to_events(runner):
    run = start(runner, "--steps", "20", "--sleep", "0.05")
    os.kill(run.record["supervisor_pid"], signal.SIGKILL)
    assert runner.get(run.id).status == "running"  # the stage itself is still alive
    run = finished(runner, run)
    assert run.status == "succeeded" and "exit_code" not in run.record


def test_missing_program_fails_cleanly(runner):
    run = finished(runner, runner.start_command("fake", ["/nonexistent/program"]))
    assert run.status == "failed" and "cannot start" in run.log_path.read_text()


def test_get_by_prefix_stage_and_last(runner):
    a = finished(runner, start(runner, "--steps", "1"))
    assert runner.get("last").id == a.id and runner.get("fake").id == a.id
    with pytest.raises(RunError, match="no run 'zzz'") as missing:
        runner.get("zzz")
    assert str(missing.value).endswith(f"(see: w4tui --config {runner.config.file} runs)")
