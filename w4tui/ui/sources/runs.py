"""Cheap polling of the runs directory: what runs exist and how each stands, as immutable snapshots.

A finished run's record never changes again, so after the first scan an idle poll costs one ``stat`` of
the runs directory plus one per unfinished run — the TUI polls every second for hours.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from w4tui.runs.runner import LIVE, Run, Runner
from w4tui.runs.supervise import RUN_FILE, read_record


@dataclass(frozen=True)
class RunInfo:
    """What the panes show about a run; the status is computed once, in the worker."""

    id: str
    stage: str
    status: str
    started: float
    ended: float | None
    pid: int | None
    output: str | None
    exit_code: int | None
    dir: Path

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.dir / "output.log"

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        return cls(
            run.id,
            run.stage,
            run.status,
            run.started,
            run.ended,
            run.pid,
            run.output,
            run.record.get("exit_code"),
            run.dir,
        )


class RunsWatcher:
    """Call ``poll()`` from a worker; it returns the runs newest first and whether anything changed."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._runs: dict[str, tuple[int, Run]] = {}  # dir name -> (run.json mtime_ns, run)
        self._dir_mtime: int | None = None
        self._last: tuple[RunInfo, ...] | None = None  # None: the first poll always reports
        self._infos: dict[str, tuple[int, RunInfo]] = {}
        self._unread: set[str] = set()  # run directories without a readable run.json (yet)
        self._lock = threading.Lock()  # a poll asked for by an action may overlap the timer's

    def poll(self) -> tuple[tuple[RunInfo, ...], bool]:
        with self._lock:
            return self._poll()

    def _poll(self) -> tuple[tuple[RunInfo, ...], bool]:
        root = self.runner.root
        try:
            dir_mtime = root.stat().st_mtime_ns
        except FileNotFoundError:
            dir_mtime = None
        if dir_mtime != self._dir_mtime:
            self._rescan(root)
            self._dir_mtime = dir_mtime
        for name in list(self._unread):
            self._refresh(root / name, name, None)
        for name, (mtime, run) in list(self._runs.items()):
            if "status" not in run.record:  # unfinished: its record may have changed since
                self._refresh(root / name, name, mtime)
        infos = tuple(
            sorted(
                (self._info(name, mtime, run) for name, (mtime, run) in self._runs.items()),
                key=lambda r: r.started,
                reverse=True,
            )
        )
        changed = infos != self._last
        self._last = infos
        return infos, changed

    def _info(self, name: str, mtime: int, run: Run) -> RunInfo:
        # A run that ended without its supervisor recording it is judged from its events: do that once.
        cached = self._infos.get(name)
        if cached is not None and cached[0] == mtime and not cached[1].live:
            return cached[1]
        info = RunInfo.of(run)
        self._infos[name] = (mtime, info)
        return info

    def _rescan(self, root: Path) -> None:
        try:
            names = {e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")}
        except FileNotFoundError:
            names = set()
        for gone in set(self._runs) - names:
            del self._runs[gone]
        self._unread = names - set(self._runs)

    def _refresh(self, run_dir: Path, name: str, known_mtime: int | None) -> None:
        try:
            mtime = (run_dir / RUN_FILE).stat().st_mtime_ns
            if mtime != known_mtime:
                self._runs[name] = (mtime, Run(run_dir, read_record(run_dir)))
            self._unread.discard(name)
        except (OSError, ValueError, KeyError):
            # Being created (the directory comes before its run.json) or unreadable: try again next poll.
            self._runs.pop(name, None)
            self._unread.add(name)
