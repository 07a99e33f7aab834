"""Shared pieces of the TUI tests: the recorded workspace as a fixture, an app factory, and waits."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tui_workspace

from core.config import load_config
from w4tui.runs.runner import Runner

ROOT = Path(__file__).resolve().parents[2]
FAKE_STAGE = str(ROOT / "tests" / "support" / "fake_stage.py")


@pytest.fixture
def anyio_backend():
    """Pilot tests are async: they run on anyio's pytest plugin (anyio comes with httpx), on asyncio."""
    return "asyncio"


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def recorded(tmp_path, monkeypatch, utc):
    """The recorded workspace's config (its runs and files under tmp_path/ws), selected via W4TUI_CONFIG."""
    config_file = tui_workspace.build(tmp_path / "ws")
    monkeypatch.setenv("W4TUI_CONFIG", str(config_file))
    return load_config(config_file)


def make_app(config, clock: Callable[[], float] | None = None):
    from w4tui.ui.app import W4App

    return W4App(config, clock=clock or (lambda: tui_workspace.NOW), sampler=tui_workspace.FixedSampler())


async def settle(pilot, rounds: int = 4) -> None:
    """Let one-off thread workers finish and their results reach the widgets. The panes' polling
    loops never finish; a short pause per round lets their next results arrive (a poke runs a round
    at once). Async workers may be waiting on a dialog the test has yet to answer: not waited for."""
    for _ in range(rounds):
        threads = [
            w
            for w in pilot.app.workers
            if w._thread_worker and not w.description.startswith("loop:") and not w.is_cancelled and not w.is_finished
        ]
        if threads:  # (an empty list would mean "all workers")
            try:
                await asyncio.wait_for(asyncio.gather(*[w.wait() for w in threads], return_exceptions=True), 20)
            except TimeoutError:
                raise AssertionError(f"workers still running after 20 s: {threads}") from None
        await pilot.pause(0.05)


async def until(pilot, predicate: Callable[[], bool], timeout: float = 15.0, what="") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            runs = [(r.stage, r.status) for r in getattr(pilot.app.screen, "runs", ())][:3]
            what = what() if callable(what) else what
            raise AssertionError(
                f"timed out waiting for {what or predicate} (screen {pilot.app.screen!r}, "
                f"runs {runs}, notifications {notifications(pilot.app)[-3:]})"
            )
        await asyncio.sleep(0.05)
        await pilot.pause()


def fake_command(steps: int = 3, sleep: float = 0.05, *extra: str) -> list[str]:
    return [sys.executable, FAKE_STAGE, "--steps", str(steps), "--sleep", str(sleep), *extra]


def start_fake(config, stage: str, steps: int = 3, sleep: float = 0.05, *extra: str, output: str | None = None):
    """A fake stage run; ``output``: what it writes, as the runner records it (no two live writers)."""
    return Runner(config).start_command(stage, fake_command(steps, sleep, *extra), cancel_grace_s=5, output=output)


def wait_ended(config, run_id: str, timeout: float = 20.0):
    runner = Runner(config)
    deadline = time.monotonic() + timeout
    while runner.get(run_id).live:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still live after {timeout} s")
        time.sleep(0.05)
    return runner.get(run_id)


def notifications(app) -> list[str]:
    return [n.message for n in app._notifications]


def text_of(widget) -> str:
    """What a Static shows, as plain text."""
    content = widget.content
    return getattr(content, "plain", str(content))


os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
