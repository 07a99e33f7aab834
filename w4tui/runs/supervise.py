"""The supervisor: one small detached process per run that starts the stage, waits for it and
records how it ended in run.json. Started by the runner as ``python -m w4tui.runs.supervise RUN_DIR``
in a session of its own, so closing the terminal (SIGHUP) or quitting the TUI never touches it.

Cancel is a file (``RUN_DIR/cancel``) rather than a signal, so any process can ask for it:
the supervisor sends SIGINT to the stage's process group, then SIGTERM after the grace period,
then SIGKILL. A run directory removed while the run goes on (its workspace deleted) cancels it the
same way: nobody could cancel or follow it any more. Standard library only, but for the machine watch during a training and the end-of-run
notification (w4tui.monitors), which are imported only when used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from core import events as ev
from core.fsutil import atomic_write_text
from core.names import FINAL_KINDS, EventKind, RunStatus
from w4tui.monitors import notify, watch

RUN_FILE, EVENTS_FILE, LOG_FILE, CANCEL_FILE = "run.json", "events.jsonl", "output.log", "cancel"
KILL_AFTER_TERM_S = 15.0


def read_record(run_dir: Path) -> dict:
    with open(run_dir / RUN_FILE, encoding="utf-8") as fh:
        return json.load(fh)


def write_record(run_dir: Path, record: dict) -> None:
    atomic_write_text(run_dir / RUN_FILE, json.dumps(record, indent=2) + "\n")


def final_status(exit_code: int | None, events: list[dict], cancel_requested: bool) -> str:
    """How a run ended: the stage's own final event decides; without one it crashed.
    ``exit_code`` is None when nobody saw the exit (the supervisor itself was killed)."""
    final = next((e for e in reversed(events) if e.get("kind") in FINAL_KINDS), None)
    if final is not None and final["kind"] == EventKind.DONE:
        if final.get("status") == RunStatus.CANCELLED:
            return RunStatus.CANCELLED
        return RunStatus.SUCCEEDED if exit_code in (0, None) else RunStatus.FAILED
    if final is not None:
        return RunStatus.CANCELLED if cancel_requested else RunStatus.FAILED
    if cancel_requested:
        return RunStatus.CANCELLED
    return RunStatus.CRASHED


def _process_ctime(pid: int) -> float | None:
    try:
        import psutil  # light, and only needed to guard against pid reuse

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def supervise(run_dir: Path) -> int:
    record = read_record(run_dir)
    env = dict(os.environ)
    env.update(record.get("env", {}))
    env.update(
        {
            ev.ENV_EVENTS: str(run_dir / EVENTS_FILE),
            ev.ENV_RUN_ID: record["id"],
            "PYTHONUNBUFFERED": "1",
            "PYTORCH_ENABLE_MPS_FALLBACK": "1",
        }
    )
    # Our own signals mean "cancel": the stage gets the same polite SIGINT as from `w4tui cancel`.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (run_dir / CANCEL_FILE).touch())
    with open(run_dir / LOG_FILE, "ab", buffering=0) as log:
        try:
            child = subprocess.Popen(
                record["command"],
                cwd=record.get("cwd"),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            log.write(f"w4tui: cannot start {record['command'][0]}: {exc}\n".encode())
            record.update(ended=time.time(), exit_code=127, status=RunStatus.FAILED)
            write_record(run_dir, record)
            return 127
        record.update(
            supervisor_pid=os.getpid(),
            supervisor_ctime=_process_ctime(os.getpid()),
            pid=child.pid,
            pid_ctime=_process_ctime(child.pid),
            started=time.time(),
        )
        write_record(run_dir, record)
        stop_watch = _watch(run_dir, record)
        exit_code = _wait(
            child,
            run_dir,
            float(record.get("cancel_grace_s", 120)),
            float(record.get("kill_after_s", KILL_AFTER_TERM_S)),
        )
        stop_watch()
    if not run_dir.is_dir():  # removed while it ran (its workspace deleted): nothing to record into
        return 0
    cancelled = (run_dir / CANCEL_FILE).exists()
    events = ev.read_events(run_dir / EVENTS_FILE)
    status = final_status(exit_code, events, cancelled)
    record.update(ended=time.time(), exit_code=exit_code, status=status)
    write_record(run_dir, record)
    _notify(record, events)
    return 0


# Machine monitoring and notifications (issue 15, w4tui.monitors): never allowed to fail a run.
def _watch(run_dir: Path, record: dict):
    """While a training runs: swap, pressure and thermal warnings as events (w4tui.monitors.watch)."""
    if record.get("stage") != "train":
        return lambda: None

    stop = threading.Event()
    try:
        watch.start(run_dir / EVENTS_FILE, record["id"], record["stage"], stop, clock=time.time)
    except Exception:
        pass
    return stop.set


def _notify(record: dict, events: list[dict]) -> None:
    """Once per run end, after the end is recorded. A stage run inside a pipeline or a night (started
    from a supervised job, whose W4TUI_RUN_ID we inherit) is left to the job's own notification."""
    if os.environ.get(ev.ENV_RUN_ID):
        return
    try:
        error = next((e.get("message") for e in reversed(events) if e.get("kind") == EventKind.ERROR), None)
        notify.run_ended(record, error)
    except Exception:
        pass


def _wait(child: subprocess.Popen, run_dir: Path, grace_s: float, kill_after_s: float) -> int:
    cancel_at: float | None = None
    sent_term = sent_kill = False
    while True:
        try:
            return child.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        # A run whose directory was removed can never be cancelled by its file, nor followed: stop it.
        if cancel_at is None and ((run_dir / CANCEL_FILE).exists() or not run_dir.is_dir()):
            cancel_at = now
            _signal_group(child.pid, signal.SIGINT)
        elif cancel_at is not None and not sent_term and now - cancel_at > grace_s:
            sent_term = True
            _signal_group(child.pid, signal.SIGTERM)
        elif sent_term and not sent_kill and now - cancel_at > grace_s + kill_after_s:
            sent_kill = True
            _signal_group(child.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    # Detach: the launcher waits only for this first process; the run lives on in the child,
    # in the new session the launcher gave us (no controlling terminal, so no SIGHUP).
    if os.fork() > 0:
        return 0
    return supervise(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
