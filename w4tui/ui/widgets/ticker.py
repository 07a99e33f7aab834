"""One thread that runs the quick periodic jobs of every pane (poll runs, follow a run's events and
log, sample the system) back to back on the same clock tick, so their results reach the UI together
and cost one repaint instead of one each. Slow jobs (Ollama over HTTP, a disk scan) get threads of
their own (``Mailbox.run_loop(..., shared=False)``): they must not hold up the others."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _Job:
    work: Callable[[], None]
    interval: Callable[[], float]
    due: float = 0.0
    poked: bool = False  # asked for again while its round ran: that round may have read the old state


_batch = threading.local()


def defer(post: Callable[[], None]) -> bool:
    """Hold ``post`` until the ticker's round ends, when called from one of its jobs (else False):
    messages posted back to back are handled in one turn of the event loop, so one frame shows them."""
    pending = getattr(_batch, "posts", None)
    if pending is None:
        return False
    pending.append(post)
    return True


class Ticker:
    def __init__(self) -> None:
        self._jobs: dict[object, _Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, key: object, work: Callable[[], None], interval: Callable[[], float]) -> None:
        with self._lock:
            self._jobs[key] = _Job(work, interval)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="w4tui-ticker", daemon=True)
                self._thread.start()
        self._wake.set()

    def remove(self, key: object) -> None:
        with self._lock:
            self._jobs.pop(key, None)

    def poke(self, key: object) -> None:
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                job.due, job.poked = 0.0, True
        self._wake.set()

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [job for job in self._jobs.values() if job.due <= now]
            _batch.posts = []
            for job in due:
                with self._lock:
                    job.poked = False
                try:
                    job.work()
                except Exception:  # a failed round is logged; the next one may succeed
                    log.exception("periodic job %s failed", getattr(job.work, "__qualname__", job.work))
                every = job.interval()
                with self._lock:
                    # On the clock's multiples of the interval, so jobs of equal interval run together;
                    # at once again if poked meanwhile (a rescan asked for during a scan is not lost).
                    job.due = 0.0 if job.poked else (time.monotonic() // every + 1) * every
            posts, _batch.posts = _batch.posts, None
            for post in posts:
                post()
            with self._lock:
                if not self._jobs:  # every pane is gone (the app quit): end; add() starts a new thread
                    self._thread = None
                    return
                wait = min(job.due for job in self._jobs.values()) - time.monotonic()
            self._wake.wait(max(0.0, wait))
            self._wake.clear()
