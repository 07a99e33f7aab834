"""How the merge and convert stages move a model through memory: row chunks computed by a small pool
of threads (numpy releases the GIL, so two cores convert twice as fast), written strictly in order, with
only a few chunks in flight so memory stays bounded; and byte/tensor progress events."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from core.events import EventWriter

T = TypeVar("T")
R = TypeVar("R")
WORKERS = max(1, min(4, os.cpu_count() or 1))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = WORKERS) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) in the order of ``items``, computed ``workers`` at a time, at most
    2 x workers results held at once."""
    if workers <= 1:
        yield from ((item, fn(item)) for item in items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="chunk") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= 2 * workers:
                    item0, future = pending.popleft()
                    yield item0, future.result()
            while pending:
                item0, future = pending.popleft()
                yield item0, future.result()
        finally:
            for _, future in pending:  # on error or Ctrl-C: do not start what is still queued
                future.cancel()


class Progress:
    """Tensor and byte progress as ``progress`` events, a few a second at most (and always the last)."""

    def __init__(self, events: EventWriter, total_bytes: int, total_tensors: int) -> None:
        self.events, self.total_bytes, self.total_tensors = events, total_bytes, total_tensors
        self.bytes = self.tensors = 0
        self.last = 0.0

    def add(self, nbytes: int, tensors: int = 0, name: str | None = None) -> None:
        self.bytes += nbytes
        self.tensors += tensors
        now = time.monotonic()
        if now - self.last > 0.25 or self.tensors == self.total_tensors:
            self.last = now
            self.events.progress(
                self.bytes,
                self.total_bytes,
                "bytes",
                message=f"tensor {self.tensors}/{self.total_tensors}" + (f" {name}" if name else ""),
                tensors_done=self.tensors,
                tensors_total=self.total_tensors,
            )
