"""The event format: how stages tell the world what they are doing.

One JSON object per line in ``runs/<run-id>/events.jsonl``, flat (no nesting), versioned.
Every event carries::

    {"v": 1, "time": 1764187200.123, "run": "<run id>", "stage": "train", "kind": "metrics", ...}

Kinds and their fields (more keys may appear; readers ignore what they do not know):

- ``start``     args (list of str), pid
- ``progress``  done, total, unit ("bytes", "tensors", "steps", "samples", ...), message
- ``metrics``   step, total_steps, epoch, loss, eval_loss, learning_rate, grad_norm,
                tokens_per_second, eta_s, device, mem_allocated, mem_driver, mem_peak (mlx),
                mem_recommended_max, mem_reserved, mem_total (bytes)
- ``artifact``  path, type ("model", "adapter", "checkpoint", "merged", "gguf", "ollama", "verified"),
                parent, bytes
- ``log``       level ("info", "warning"), message
- ``done``      status ("succeeded" or "cancelled"), plus a result summary
- ``error``     message (one line a person can act on), hint

``done`` and ``error`` are final: a run that ends without one of them crashed.
This module is standard-library only: stages and the TUI both import it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .names import FINAL_KINDS, EventKind, RunStatus

VERSION = 1
KINDS = tuple(EventKind)
__all__ = [
    "FINAL_KINDS",
    "KINDS",
    "VERSION",
    "EventReader",
    "EventWriter",
    "format_event",
    "make_event",
    "parse_line",
    "read_events",
    "iter_kind",
]

# Set by the runner for the stage process; without them events go to stderr as text.
ENV_EVENTS = "W4TUI_EVENTS"
ENV_RUN_ID = "W4TUI_RUN_ID"


def make_event(run: str, stage: str, kind: str, **fields: Any) -> dict[str, Any]:
    """Build one event; ``fields`` must be flat JSON scalars (or lists of scalars)."""
    event: dict[str, Any] = {"v": VERSION, "time": round(time.time(), 3), "run": run, "stage": stage, "kind": kind}
    for key, value in fields.items():
        if value is not None:
            event[key] = value
    return event


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One event from one line, or None for anything that is not an event object."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's limit
        return None
    if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
        return None
    return event


@dataclass
class EventReader:
    """Reads an events file incrementally: call ``read()`` again to get what was appended since.

    A last line without its newline is left for the next call (the writer may be mid-line),
    and lines that are not JSON objects are skipped, so a torn or corrupted file never stops a reader.
    """

    path: Path
    offset: int = 0
    _pending: bytes = field(default=b"", repr=False)

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()  # b"" after a complete last line
        return [event for line in lines if line.strip() and (event := parse_line(line)) is not None]


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete events in a file (a torn last line is ignored)."""
    return EventReader(Path(path)).read()


class EventWriter:
    """Appends events for one run. Each event is one ``write`` of one line, flushed at once,
    so a reader never sees half an event except as a torn last line."""

    def __init__(self, stage: str, path: str | os.PathLike[str] | None = None, run: str = "") -> None:
        self.stage = stage
        self.run = run
        self.path = Path(path) if path else None
        self._fh = open(self.path, "a", encoding="utf-8") if self.path else None

    @classmethod
    def from_env(cls, stage: str) -> EventWriter:
        """The writer a stage uses: the run's events file when started by the runner, else stderr text."""
        return cls(stage, os.environ.get(ENV_EVENTS) or None, os.environ.get(ENV_RUN_ID, ""))

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = make_event(self.run, self.stage, kind, **fields)
        if self._fh is not None:
            self._fh.write(json.dumps(event, separators=(",", ":"), default=str) + "\n")
            self._fh.flush()
        elif kind != EventKind.START:  # a person at a terminal knows they started it
            print(format_event(event), file=sys.stderr, flush=True)
        return event

    def progress(self, done: float, total: float | None, unit: str = "", message: str | None = None, **fields: Any):
        return self.emit(EventKind.PROGRESS, done=done, total=total, unit=unit, message=message, **fields)

    def metrics(self, **fields: Any):
        return self.emit(EventKind.METRICS, **fields)

    def artifact(self, path: str | os.PathLike[str], type: str, parent: str | None = None, **fields: Any):
        return self.emit(EventKind.ARTIFACT, path=str(path), type=type, parent=parent, **fields)

    def log(self, message: str, level: str = "info", **fields: Any):
        return self.emit(EventKind.LOG, level=level, message=message, **fields)

    def done(self, status: str = RunStatus.SUCCEEDED, **fields: Any):
        return self.emit(EventKind.DONE, status=status, **fields)

    def error(self, message: str, hint: str | None = None, **fields: Any):
        return self.emit(EventKind.ERROR, message=message, hint=hint, **fields)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def format_event(event: dict[str, Any]) -> str:
    """A short human line for an event (stderr output, ``w4tui logs``)."""
    kind = event.get("kind")
    stage = event.get("stage", "?")
    if kind == EventKind.PROGRESS:
        done, total, unit = event.get("done"), event.get("total"), event.get("unit", "")
        text = f"{done}/{total} {unit}".strip() if total else f"{done} {unit}".strip()
        if event.get("message"):
            text += f"  {event['message']}"
    elif kind == EventKind.METRICS:
        text = "  ".join(f"{k}={_short(v)}" for k, v in event.items() if k not in ("v", "time", "run", "stage", "kind"))
    elif kind == EventKind.ARTIFACT:
        text = f"{event.get('type')}: {event.get('path')}"
    elif kind == EventKind.ERROR:
        text = str(event.get("message", ""))
        if event.get("hint"):
            text += f" ({event['hint']})"
    elif kind == EventKind.DONE:
        text = str(event.get("status", RunStatus.SUCCEEDED))
    elif kind == EventKind.START:  # no message: what started, so the line is not a bare "start: "
        parts = [f"pid {event['pid']}"] if event.get("pid") else []
        if event.get("args"):
            parts.append(shlex.join(str(a) for a in event["args"]))
        if event.get("stages"):
            parts.append(" > ".join(map(str, event["stages"])))
        if event.get("night"):
            parts.append(f"night {event['night']}")
        text = "  ".join(parts) or str(event.get("message", ""))
    else:
        text = str(event.get("message", ""))
    return f"[{stage}] {kind}: {text}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def iter_kind(events: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (e for e in events if e.get("kind") == kind)
