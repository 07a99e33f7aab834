"""SIGTERM ends a night like Ctrl-C (issue 22 part 2): the step in flight is cancelled and recorded so, a
signal that lands while the night is starting a step is held until that step is known (else the step
runs on, detached, and succeeds unseen); and a night that starts with Ollama down says so in a
``warning:`` line before it trains."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import types
from datetime import date
from pathlib import Path

import pytest

from core.events import EventWriter
from core.program import sigterm_as_interrupt
from w4tui.nightly.cli import follow_night
from w4tui.runs.pipeline import Step, run_pipeline


@pytest.fixture
def sigterm_interrupts():
    saved = signal.getsignal(signal.SIGTERM)
    sigterm_as_interrupt()  # as in every background program (core/program.py)
    yield
    signal.signal(signal.SIGTERM, saved)


def test_a_sigterm_while_a_step_starts_waits_until_the_step_is_known(sigterm_interrupts):
    seen = []

    class Runner:
        config = None  # pre-flight reads nothing of a call the stage would refuse (args None)

        def invocation(self, stage, extra=(), **_):
            return types.SimpleNamespace(spec=types.SimpleNamespace(name=stage), args=None)

        def start(self, inv):
            os.kill(os.getpid(), signal.SIGTERM)  # lands in the middle of starting the detached step
            time.sleep(0.05)
            return types.SimpleNamespace(id="run-1")

    def wait(runner, run):
        raise AssertionError("the interrupt should have come before any wait")

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(Runner(), [Step("train", args=[])], on_event=lambda e: seen.append((e.kind, e.run_id)), wait=wait)
    assert seen == [("started", "run-1")]  # the night knows the run it must cancel
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler  # handlers put back


def test_a_followed_night_shows_its_warnings_as_warnings(tmp_path):
    events = tmp_path / "events.jsonl"
    writer = EventWriter("nightly", events, "n1")
    writer.log("Ollama is not answering at http://127.0.0.1:9 now; the night's deploy step needs it", level="warning")
    writer.log("data x.jsonl (5 samples)")
    run = types.SimpleNamespace(id="n1", events_path=events)
    runner = types.SimpleNamespace(get=lambda run_id: types.SimpleNamespace(live=False))
    out = io.StringIO()
    follow_night(runner, run, out, poll_s=0)
    assert out.getvalue().splitlines() == [
        "warning: Ollama is not answering at http://127.0.0.1:9 now; the night's deploy step needs it",
        "data x.jsonl (5 samples)",
    ]


@pytest.mark.slow
def test_sigterm_to_a_night_cancels_its_training_and_ollama_down_is_said_first(tmp_path):
    """A real night on the demo's tiny model, Ollama down; SIGTERM to the night's driver during its training."""
    from w4tui.demo.workspace import init_demo

    config = init_demo(tmp_path / "demo", samples=60, day=date(2026, 12, 1))
    runs = config.parent / "runs"
    env = {**os.environ, "OLLAMA_HOST": "http://127.0.0.1:9"}
    cli = subprocess.Popen(
        [sys.executable, "-m", "w4tui", "--config", str(config), "nightly", "--now"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        train = wait_for(lambda: next(iter(runs.glob("*-train-*")), None), "the train step to start")
        night = next(runs.glob("*-nightly-*"))
        driver = json.loads((night / "run.json").read_text())["pid"]
        os.kill(driver, signal.SIGTERM)
        out, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130, out + err
    lines = out.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning:") and "127.0.0.1:9" in line)
    assert warning < next(i for i, line in enumerate(lines) if line.startswith("== train")), out
    assert lines[-1].startswith("night cancelled"), out
    trained = wait_for(lambda: (r := json.loads((train / "run.json").read_text())).get("ended") and r, "train to end")
    assert trained["status"] == "cancelled", trained
    from core.config import load_config
    from w4tui.nightly.ledger import Ledger

    recorded = Ledger.open(load_config(config)).nights()[0]
    assert recorded["outcome"] == "cancelled"
    assert recorded["steps"][0]["step"] == "train" and recorded["steps"][0]["status"] == "cancelled", recorded


def wait_for(probe, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
