"""Start, list, follow and cancel stage runs. Every process (the TUI, a CLI in another shell, a TUI
started tomorrow) sees the same runs, because a run is only files under ``<runs>/<run-id>/``:

- ``run.json``      command, output, pids, times, exit code and final status (written by the supervisor)
- ``events.jsonl``  the stage's events (see ``core.events``)
- ``output.log``    the stage's stdout and stderr
- ``cancel``        present once someone asked to cancel

Standard library plus psutil: the TUI imports this.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core import events as ev
from core import specs, trainsettings
from core.config import Config
from core.errors import RunError  # defined in core: pre-flight (a lower layer) raises it too
from core.names import LIVE_STATUSES, EventKind, RunStatus
from core.specs import Invocation
from w4tui.runs.supervise import CANCEL_FILE, EVENTS_FILE, LOG_FILE, final_status, read_record, write_record

LIVE = LIVE_STATUSES


@dataclass
class Run:
    dir: Path
    record: dict

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def stage(self) -> str:
        return self.record["stage"]

    @property
    def events_path(self) -> Path:
        return self.dir / EVENTS_FILE

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def started(self) -> float:
        return self.record.get("started") or self.record["created"]

    @property
    def ended(self) -> float | None:
        return self.record.get("ended")

    @property
    def pid(self) -> int | None:
        return self.record.get("pid")

    @property
    def output(self) -> str | None:
        return self.record.get("output")

    @property
    def status(self) -> str:
        """running / succeeded / failed / cancelled / crashed (and starting / cancelling on the way)."""
        if "status" in self.record:
            return self.record["status"]
        cancelling = (self.dir / CANCEL_FILE).exists()
        if _alive(self.record.get("supervisor_pid"), self.record.get("supervisor_ctime")) or _alive(
            self.pid, self.record.get("pid_ctime")
        ):
            return RunStatus.CANCELLING if cancelling else RunStatus.RUNNING
        if "supervisor_pid" not in self.record and time.time() - self.record["created"] < 10:
            return RunStatus.STARTING
        # The supervisor died without recording an end (killed, machine rebooted): judge by the events.

        return final_status(None, self.events(), cancelling)

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def events(self) -> list[dict]:
        return ev.read_events(self.events_path)

    def artifacts(self, events: list[dict] | None = None) -> list[dict]:
        return [e for e in (self.events() if events is None else events) if e.get("kind") == EventKind.ARTIFACT]

    def error(self) -> dict | None:
        return next((e for e in reversed(self.events()) if e.get("kind") == EventKind.ERROR), None)

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 64 * 1024))
                return fh.read().decode("utf-8", "replace").splitlines()[-lines:]
        except FileNotFoundError:
            return []

    def summary(self) -> dict:
        """What `w4tui status --json` prints for a run."""
        events = self.events()
        return {
            "id": self.id,
            "stage": self.stage,
            "status": self.status,
            "started": _iso(self.started),
            "ended": _iso(self.ended),
            "pid": self.pid,
            "exit_code": self.record.get("exit_code"),
            "output": self.output,
            "command": self.record["command"],
            "artifacts": [a["path"] for a in self.artifacts(events)],
            "error": next((e.get("message") for e in reversed(events) if e.get("kind") == EventKind.ERROR), None),
            "dir": str(self.dir),
        }


class Runner:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.paths.runs

    # -- starting --------------------------------------------------------------------------
    def invocation(
        self,
        stage: str,
        extra: list[str] = (),
        *,
        args: list[str] | None = None,
        build: str | None = None,
        input_path: str | None = None,
    ) -> Invocation:
        """A call of ``stage``, parsed. Without ``args`` its arguments come from the config and its input
        (``input_path``, else the one ``extra`` names, else the newest artifact of the stage before), and
        ``extra`` follows them: the stage's parser keeps a flag's last value, so each flag in ``extra``
        replaces its default. ``args`` replaces them all. RunError: an unknown stage, or no input yet."""
        spec = specs.BY_NAME.get(stage)
        if spec is None:
            raise RunError(f"unknown stage '{stage}' (stages: {', '.join(specs.NAMES)})")
        if args is None and specs.HELP & set(extra):
            args = list(extra)  # the stage's help needs no input
        if args is None:
            args = self.default_args(stage, build, input_path, extra) + list(extra)
        return spec.invoke(self.config, args)

    def start(self, inv: Invocation) -> Run:
        """Start a stage call as a detached run. Pre-flight is the caller's step before this one
        (w4tui/runs/start.py, which the CLI, the TUI and the pipeline use)."""
        facts = {"train": trainsettings.batch(inv.args)} if inv.spec.name == "train" and inv.args else None
        return self.start_command(inv.spec.name, inv.command, output=inv.output, facts=facts)

    def default_args(
        self, stage: str, build: str | None = None, input_path: str | None = None, extra: list[str] = ()
    ) -> list[str]:
        """A stage's arguments from the config and its input; RunError when it has no input yet."""
        if input_path is None:
            given = specs.BY_NAME[stage].given(self.config, extra) if extra else None
            input_path = specs.input_for(stage, self.latest_artifact, given)
        try:
            return specs.default_args(stage, self.config, input_path, build or specs.stamp())
        except LookupError as exc:
            raise RunError(str(exc)) from None

    def start_command(
        self,
        stage: str,
        command: list[str],
        cancel_grace_s: float = 120.0,
        kill_after_s: float = 15.0,
        output: str | None = None,
        facts: dict | None = None,
    ) -> Run:
        """Start any command as a detached, supervised run (the pipeline, the night; the tests' small
        fake stages). ``output`` is what no two live runs may share; ``facts`` go into run.json as they
        are (a training's ranks and global batch)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            for other in self.runs():
                if other.live and output and other.output and _overlaps(output, other.output):
                    raise RunError(
                        f"{other.stage} run {other.id} is still writing to {other.output} "
                        f"(pid {other.pid}); wait for it, or cancel it: {self.config.cli} cancel {other.id}"
                    )
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{stage}-{secrets.token_hex(2)}"
            run_dir = self.root / run_id
            run_dir.mkdir()
            record = {
                "id": run_id,
                "stage": stage,
                "command": command,
                "cwd": str(Path.cwd()),
                "output": output,
                "created": time.time(),
                "cancel_grace_s": cancel_grace_s,
                "kill_after_s": kill_after_s,
                "env": self.config.stage_env(),
                **(facts or {}),
            }
            write_record(run_dir, record)
            with open(run_dir / LOG_FILE, "ab") as log:
                # The supervisor forks and its first process exits at once, so the run is never our
                # child (no zombie in a long-lived TUI) and belongs to no terminal.
                subprocess.run(
                    [sys.executable, "-m", "w4tui.runs.supervise", str(run_dir)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    check=False,
                )
            return self._wait_started(run_dir)

    def _wait_started(self, run_dir: Path, timeout: float = 10.0) -> Run:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = read_record(run_dir)
            if "supervisor_pid" in record or "status" in record:
                return Run(run_dir, record)
            time.sleep(0.02)
        return Run(run_dir, read_record(run_dir))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Serialises the conflict check and the launch across processes (TUI, CLI, scheduler).
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- looking ---------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        """All runs, newest first. A run directory without a readable run.json is skipped."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                if entry.is_dir():
                    with contextlib.suppress(OSError, ValueError, KeyError):
                        out.append(Run(Path(entry.path), read_record(Path(entry.path))))
        return sorted(out, key=lambda r: r.record["created"], reverse=True)

    def get(self, run_id: str) -> Run:
        """A run by id, a unique prefix of one, or ``last`` / a stage name for the newest."""
        runs = self.runs()
        if run_id == "last" and runs:
            return runs[0]
        matches = (
            [r for r in runs if r.id == run_id]
            or [r for r in runs if r.id.startswith(run_id)]
            or [r for r in runs if r.stage == run_id][:1]
        )
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunError(f"no run '{run_id}' in {self.root} (see: {self.config.cli} runs)")
        raise RunError(f"'{run_id}' matches {len(matches)} runs; give more of the id")

    def latest_artifact(self, stage: str, type: str | None = None) -> str | None:
        """The newest artifact (of ``type``, default the stage's own) from a succeeded run of ``stage``."""
        wanted = type or specs.BY_NAME[stage].produces
        for run in self.runs():
            if run.stage == stage and run.status == RunStatus.SUCCEEDED:
                found = [a["path"] for a in run.artifacts() if a.get("type") == wanted]
                if found:
                    return found[-1]
        return None

    # -- cancelling ------------------------------------------------------------------------
    def cancel(self, run_id: str) -> Run:
        run = self.get(run_id)
        if not run.live:
            raise RunError(f"run {run.id} is not running ({run.status})")
        (run.dir / CANCEL_FILE).touch()
        if not _alive(run.record.get("supervisor_pid"), run.record.get("supervisor_ctime")) and run.pid:
            # No supervisor to escalate: ask the stage directly.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGINT)
        return run


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _alive(pid: int | None, ctime: float | None) -> bool:
    if not pid:
        return False
    try:
        import psutil  # deferred: only a training's start reads the free memory

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return ctime is None or abs(proc.create_time() - ctime) < 1.0
    except Exception:
        return False


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
