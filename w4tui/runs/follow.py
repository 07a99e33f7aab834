"""Follow a run from a terminal: a one-line progress bar on a TTY, plain event lines otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from core.events import EventReader, format_event
from core.names import EventKind, RunStatus
from core.units import duration
from w4tui.runs.runner import Run, Runner


def follow(runner: Runner, run: Run, out: TextIO = sys.stdout, poll_s: float = 0.2) -> str:
    """Print progress until the run ends; return its final status. Ctrl-C propagates (caller detaches)."""
    reader = EventReader(run.events_path)
    bar = _Bar(out) if out.isatty() else None
    while True:
        for event in reader.read():
            if bar is not None and event.get("kind") in (EventKind.PROGRESS, EventKind.METRICS):
                bar.update(event)
            elif bar is not None and event.get("kind") not in (EventKind.LOG, EventKind.START):
                bar.clear()
                print(format_event(event), file=out, flush=True)
            elif bar is None and event.get("kind") != EventKind.METRICS:
                print(format_event(event), file=out, flush=True)
        run = runner.get(run.id)
        if not run.live:
            for event in reader.read():  # the events written just before the end
                if event.get("kind") in (EventKind.ARTIFACT, EventKind.ERROR, EventKind.DONE):
                    print(format_event(event), file=out, flush=True)
            if bar is not None:
                bar.clear()
            return run.status
        time.sleep(poll_s)


class _Bar:
    """One line: the stage, a bar, done/total, and the training figures from the newest metrics event
    (loss, tokens/s, ETA): a progress event between two metrics events keeps them."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.last = ""
        self.figures: dict = {}  # the newest metrics values, by key

    def update(self, event: dict) -> None:
        if event.get("kind") == EventKind.METRICS:
            self.figures.update(
                {k: event[k] for k in ("loss", "tokens_per_second", "eta_s") if event.get(k) is not None}
            )
            if "step" not in event:
                return  # (an eval-only report)
        done = event.get("step", event.get("done"))
        total = event.get("total_steps", event.get("total"))
        unit = "steps" if "step" in event else event.get("unit", "")
        self.last = text = self.line(event.get("stage", ""), done, total, unit, shutil.get_terminal_size().columns)
        self.out.write("\r" + text + "\x1b[K")
        self.out.flush()

    def line(self, stage: str, done, total, unit: str, columns: int) -> str:
        f = self.figures
        extra = "".join(
            [
                f"  loss {f['loss']:.4f}" if "loss" in f else "",
                f"  {f['tokens_per_second']:,.0f} tok/s" if "tokens_per_second" in f else "",
                f"  ETA {duration(f['eta_s'])}" if "eta_s" in f else "",
            ]
        )
        count = f" {done}/{total} {unit}" if total else (f" {done} {unit}" if done is not None else "")
        head = f"[{stage}] "
        # The figures matter more than the bar: it shrinks first on a narrow terminal.
        width = max(10, min(40, columns - 1 - len(head) - 9 - len(count) - len(extra)))
        frac = min(1.0, done / total) if isinstance(done, (int, float)) and total else 0.0
        text = f"{head}[{'#' * int(frac * width):<{width}}] {frac:6.1%}{count}{extra}"
        return text[: columns - 1]

    def clear(self) -> None:
        if self.last:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.last = ""


def follow_log(run: Run, runner: Runner, out: TextIO = sys.stdout, poll_s: float = 0.3) -> None:
    """``tail -f`` of a run's output.log until the run ends."""
    offset = 0
    while True:
        live = runner.get(run.id).live
        try:
            with open(run.log_path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        if chunk:
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
        if not live:
            return
        time.sleep(poll_s)


def follow_pipeline(runner: Runner, job: Run, out: TextIO = sys.stdout, poll_s: float = 0.3) -> str:
    """Follow a detached pipeline job: each step's own run as it starts (its progress bar or event
    lines), the job's step lines between them. Returns the job's final status; Ctrl-C propagates
    (the job keeps running: the caller says how to follow it again)."""
    reader = EventReader(job.events_path)
    stopped = False
    while True:
        live = runner.get(job.id).live  # before reading, so the events written before the end are read
        for event in reader.read():
            kind, status = event.get("kind"), event.get("step_status")
            if kind == EventKind.PROGRESS and event.get("step_run") and status is None:
                print(f"== {event.get('message')}", file=out, flush=True)
                follow(runner, runner.get(event["step_run"]), out)
            elif kind == EventKind.PROGRESS and status not in (None, RunStatus.SUCCEEDED):
                stopped = True
                print(f"pipeline stopped: {event.get('message')}", file=out, flush=True)
                print(
                    "\n".join(["-- last lines of its output.log:", *runner.get(event["step_run"]).log_tail(10)]),
                    file=out,
                    flush=True,
                )
            elif kind == EventKind.ERROR and not stopped:
                print(format_event(event), file=out, flush=True)
        if not live:
            return runner.get(job.id).status
        time.sleep(poll_s)
