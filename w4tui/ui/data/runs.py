"""Cheap polling of the runs directory: what runs exist and how each stands, as immutable snapshots.

A finished run's record never changes again, so after the first scan an idle poll costs one ``stat`` of
the runs directory plus one per unfinished run — the TUI polls every second for hours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...runner import LIVE, Run, Runner
from ...supervise import RUN_FILE, read_record


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
    def of(cls, run: Run) -> "RunInfo":
        return cls(run.id, run.stage, run.status, run.started, run.ended, run.pid, run.output,
                   run.record.get("exit_code"), run.dir)


class RunsWatcher:
    """Call ``poll()`` from a worker; it returns the runs newest first and whether anything changed."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._runs: dict[str, tuple[int, Run]] = {}  # dir name -> (run.json mtime_ns, run)
        self._dir_mtime: int | None = None
        self._last: tuple[RunInfo, ...] | None = None  # None: the first poll always reports

    def poll(self) -> tuple[tuple[RunInfo, ...], bool]:
        root = self.runner.root
        try:
            dir_mtime = root.stat().st_mtime_ns
        except FileNotFoundError:
            dir_mtime = None
        if dir_mtime != self._dir_mtime:
            self._rescan(root)
            self._dir_mtime = dir_mtime
        for name, (mtime, run) in list(self._runs.items()):
            if "status" not in run.record:  # unfinished: its record may have changed since
                self._refresh(root / name, name, mtime)
        infos = tuple(sorted((RunInfo.of(run) for _, run in self._runs.values()),
                             key=lambda r: r.started, reverse=True))
        changed = infos != self._last
        self._last = infos
        return infos, changed

    def _rescan(self, root: Path) -> None:
        seen = set()
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith("."):
                seen.add(entry.name)
                if entry.name not in self._runs:
                    self._refresh(Path(entry.path), entry.name, None)
        for gone in set(self._runs) - seen:
            del self._runs[gone]

    def _refresh(self, run_dir: Path, name: str, known_mtime: int | None) -> None:
        try:
            mtime = (run_dir / RUN_FILE).stat().st_mtime_ns
            if mtime != known_mtime:
                self._runs[name] = (mtime, Run(run_dir, read_record(run_dir)))
        except (OSError, ValueError, KeyError):
            self._runs.pop(name, None)  # half-created or unreadable: skipped, as Runner.runs() does
