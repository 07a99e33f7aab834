"""Run a range of pipeline stages in order, each as a normal detached run, chaining artifacts.

The pipeline reports what it does as typed ``StepEvent``s to a callback: the CLI's follower and the
detached pipeline job (``pipeline_job``) render or record them; nothing reads printed text back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from core import specs
from core.names import RunStatus
from w4tui.runs.runner import Run, RunError, Runner
from w4tui.runs.start import checked_start


@dataclass(frozen=True)
class Step:
    """One stage of a chain. ``extra`` follows its default arguments (each flag in it replaces the
    default); ``args`` replaces them (no defaults). Its input is the artifact the step before produced."""

    stage: str
    extra: list[str] = field(default_factory=list)
    args: list[str] | None = None


@dataclass(frozen=True)
class StepEvent:
    kind: str  # "started" or "ended"
    index: int  # 0-based position in the chain
    total: int
    stage: str
    run_id: str
    status: str | None = None  # ended: the run's final status
    artifact: str | None = None  # ended and succeeded: what the step produced
    error: str | None = None  # ended otherwise: the error line (with its hint), if the stage gave one


def stage_range(start: str | None, stop: str | None) -> list[str]:
    names = list(specs.NAMES)
    for value in (start, stop):
        if value is not None and value not in names:
            raise RunError(f"unknown stage '{value}' (stages: {', '.join(names)})")
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    if first > last:
        raise RunError(f"--from {start} comes after --to {stop} in the pipeline ({' > '.join(names)})")
    return names[first : last + 1]


def wait_for(runner: Runner, run: Run, poll_s: float = 0.5) -> str:
    """Wait until ``run`` ends; its final status."""
    while (run := runner.get(run.id)).live:
        time.sleep(poll_s)
    return run.status


def run_pipeline(
    runner: Runner,
    steps: list[str | Step],
    on_event: Callable[[StepEvent], None] = lambda event: None,
    wait: Callable[[Runner, Run], str] = wait_for,
    build: str | None = None,
) -> list[StepEvent]:
    """Run ``steps`` one after another, stopping at the first that does not succeed.

    Returns every step's "ended" event; the chain succeeded when the last one says so for the last
    step. KeyboardInterrupt while waiting propagates (the running step keeps running)."""
    chain = [s if isinstance(s, Step) else Step(s) for s in steps]
    build = build or specs.stamp()
    previous: str | None = None
    ended: list[StepEvent] = []
    for index, step in enumerate(chain):
        # The first step's input follows the usual rule (the newest artifact of the stage before);
        # later steps take what the step before them produced.
        input_path = previous if index else None
        inv = runner.invocation(step.stage, step.extra, args=step.args, build=build, input_path=input_path)
        with signals_deferred():  # a cancel now must find the step it started (on_event hands it over)
            run = checked_start(runner, inv)  # pre-flight, then the run
            on_event(StepEvent("started", index, len(chain), step.stage, run.id))
        status = wait(runner, run)
        finished = runner.get(run.id)
        produced = [a["path"] for a in finished.artifacts() if a.get("type") == specs.BY_NAME[step.stage].produces]
        error = finished.error()
        event = StepEvent(
            "ended",
            index,
            len(chain),
            step.stage,
            run.id,
            status,
            artifact=produced[-1] if produced else None,
            error=_error_line(error) if status != RunStatus.SUCCEEDED and error else None,
        )
        ended.append(event)
        on_event(event)
        if status != RunStatus.SUCCEEDED:
            break
        previous = event.artifact
    return ended


HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a step starts, and raise KeyboardInterrupt once it has: a signal
    that arrived while the runner was starting a detached step would otherwise leave that step running,
    unknown to the one cancelling. (Handlers, not a signal mask: a mask would pass to the step's process.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    saved = {sig: signal.signal(sig, lambda number, _frame: caught.append(number)) for sig in HELD}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


def succeeded(ended: list[StepEvent], steps: list) -> bool:
    return len(ended) == len(steps) and all(e.status == RunStatus.SUCCEEDED for e in ended)


def _error_line(error: dict) -> str:
    return error.get("message", "") + (f" ({error['hint']})" if error.get("hint") else "")
