"""Watching the machine while a training runs: swap growing fast, memory pressure critical or thermal
throttling become ``log`` events with level "warning" in the run's events.jsonl, where the panes and
the nightly history see them. It runs in the supervisor (which outlives a closed TUI), on a thread that
samples every ``EVERY_S``. ``RunWatch`` decides, and is tested with a scripted clock.
"""

from __future__ import annotations

import platform
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from core.events import EventWriter

from .macos import UnexpectedOutput, parse_pmset_therm, parse_pressure_level
from .sampler import ToolProblem, run_tool

EVERY_S = 15.0
SWAP_WINDOW_S = 300.0
SWAP_GROWTH = 1_000_000_000  # bytes of swap gained within the window that mean "paging hard"


class RunWatch:
    """Each condition warns once when it starts, and again only after it has cleared."""

    def __init__(self) -> None:
        self._swap: deque[tuple[float, int]] = deque()
        self._active: set[str] = set()

    def observe(self, now: float, swap_used: int | None, pressure: str | None, throttled: bool | None) -> list[str]:
        out = []
        if swap_used is not None:
            self._swap.append((now, swap_used))
            while self._swap and now - self._swap[0][0] > SWAP_WINDOW_S:
                self._swap.popleft()
            grown = swap_used - min(used for _, used in self._swap)
            if self._edge("swap", grown >= SWAP_GROWTH, grown < SWAP_GROWTH / 2):
                out.append(
                    f"swap grew {grown / 1e9:.1f} GB in {SWAP_WINDOW_S / 60:.0f} min (now {swap_used / 1e9:.1f} "
                    f"GB used): memory is short and the training will slow down"
                )
        if pressure is not None and self._edge("pressure", pressure == "critical", pressure == "normal"):
            out.append("memory pressure is critical: macOS may kill the training; quit other apps")
        if throttled is not None and self._edge("thermal", throttled, not throttled):
            out.append("the CPU is thermally throttled: the training runs slower; check the Mac's ventilation")
        return out

    def _edge(self, name: str, on: bool, off: bool) -> bool:
        if on and name not in self._active:
            self._active.add(name)
            return True
        if off:
            self._active.discard(name)
        return False


def measure() -> tuple[int | None, str | None, bool | None]:
    """(swap used, pressure level, throttled) on this machine; None for what it cannot tell."""
    import psutil  # deferred: only the supervisor of a training watches

    swap = psutil.swap_memory().used
    if platform.system() != "Darwin":
        return swap, None, None

    pressure = throttled = None
    try:
        pressure = parse_pressure_level(run_tool(["sysctl", "kern.memorystatus_vm_pressure_level"]))
    except (ToolProblem, UnexpectedOutput):
        pass
    try:
        thermal = parse_pmset_therm(run_tool(["pmset", "-g", "therm"]))
        throttled = thermal.throttled if thermal.reported else None
    except (ToolProblem, UnexpectedOutput):
        pass
    return swap, pressure, throttled


def start(
    events_path: Path,
    run_id: str,
    stage: str,
    stop: threading.Event,
    clock: Callable[[], float],
    measure: Callable[[], tuple] = measure,
    every: float = EVERY_S,
) -> threading.Thread:
    """A daemon thread writing warnings to ``events_path`` until ``stop`` is set."""

    def loop() -> None:
        watch = RunWatch()
        writer = EventWriter(stage, events_path, run_id)
        try:
            while not stop.wait(every):
                try:
                    figures = measure()
                except Exception:  # a tool that failed this round: try again next round
                    continue
                for text in watch.observe(clock(), *figures):
                    writer.log(text, level="warning", source="monitor")
        finally:
            writer.close()

    thread = threading.Thread(target=loop, name="w4tui-watch", daemon=True)
    thread.start()
    return thread
