"""System load for the memory pane: RAM, swap, CPU per core, load average and free disk, with a
short history for sparklines. psutil only; one sample costs well under a millisecond."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

HISTORY = 90  # samples kept: 6 minutes at the pane's 4 s interval


@dataclass(frozen=True)
class SystemSample:
    time: float
    ram_used: int
    ram_total: int
    swap_used: int
    swap_total: int
    cpu: tuple[float, ...]  # percent per core since the previous sample
    load: tuple[float, float, float]
    disk_free: int | None
    disk_total: int | None
    disk_path: str

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu) / len(self.cpu) if self.cpu else 0.0


@dataclass
class SystemHistory:
    latest: SystemSample | None = None
    ram: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    swap: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    cpu: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    load: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    times: deque = field(default_factory=lambda: deque(maxlen=HISTORY))

    def add(self, sample: SystemSample) -> None:
        self.latest = sample
        self.times.append(sample.time)
        self.ram.append(sample.ram_used)
        self.swap.append(sample.swap_used)
        self.cpu.append(sample.cpu_total)
        self.load.append(sample.load[0])


class SystemSampler:
    """``sample()`` from a worker. ``disk_path`` is the outputs directory (or its nearest existing parent)."""

    def __init__(self, disk_path: Path) -> None:
        import psutil  # deferred: the TUI's first frame does not need it

        self._psutil = psutil
        self.disk_path = disk_path
        psutil.cpu_percent(percpu=True)  # primes the per-core counters

    def backfill(self) -> list[SystemSample]:
        """Samples from before the pane existed: none here (the sampler starts with the TUI)."""
        return []

    def sample(self) -> SystemSample:
        ps = self._psutil
        vm, sw = ps.virtual_memory(), ps.swap_memory()
        existing = _existing(self.disk_path)
        try:
            du = ps.disk_usage(str(existing))
            free, total = du.free, du.total
        except OSError:
            free = total = None
        try:
            load = os.getloadavg()
        except OSError:
            load = (0.0, 0.0, 0.0)
        return SystemSample(
            time.time(),
            vm.total - vm.available,
            vm.total,
            sw.used,
            sw.total,
            tuple(ps.cpu_percent(percpu=True)),
            load,
            free,
            total,
            str(existing),
        )


def _existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
