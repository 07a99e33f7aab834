"""Exactly one scheduler across processes: an exclusive ``flock`` on ``<state>/scheduler.lock``.

The kernel drops the lock when its holder dies (kill -9, crash, power loss), so a crashed holder's lock
is free at once for the next process that tries; nothing stale to clean up. The file's text says who
holds it (pid, "daemon" or "tui", since when), for the read-only processes to show.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = "scheduler.lock"


class SchedulerLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self, kind: str) -> bool:
        """Take the lock if nobody holds it; True when this process now holds it."""
        if self._fh is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "kind": kind, "host": socket.gethostname(), "since": time.time()}))
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def holder(self) -> dict | None:
        """Who holds the scheduler ({"pid", "kind", "host", "since"}), or None when nobody does."""
        if self._fh is not None:
            return self._read()
        try:
            fh = open(self.path, encoding="utf-8")
        except FileNotFoundError:
            return None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return self._read() or {"pid": None, "kind": "unknown"}
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "nobody holds the scheduler"
    return f"held by {holder.get('kind', '?')} pid {holder.get('pid')}"
