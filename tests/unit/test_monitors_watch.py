"""During a training: fast-growing swap, critical pressure and throttling become warning events, each
once until it clears (a scripted clock), written by the watch thread into the run's events."""

from __future__ import annotations

import threading
import time

from core.events import read_events
from w4tui.monitors.watch import SWAP_GROWTH, RunWatch, start

GB = 10**9


def test_swap_growing_fast_warns_once_until_it_settles():
    watch = RunWatch()
    assert watch.observe(0, 2 * GB, "normal", False) == []
    assert watch.observe(60, int(2.5 * GB), "normal", False) == []
    (warning,) = watch.observe(120, 2 * GB + SWAP_GROWTH, "normal", False)
    assert warning.startswith("swap grew 1.0 GB in 5 min (now 3.0 GB used)")
    assert watch.observe(180, 4 * GB, "normal", False) == []  # still growing: said already
    # Five quiet minutes later the window holds no growth; growing again warns again.
    assert watch.observe(600, 4 * GB, "normal", False) == []
    assert watch.observe(700, 4 * GB, "normal", False) == []
    assert len(watch.observe(760, 5 * GB + 1, "normal", False)) == 1


def test_slow_swap_growth_is_not_a_warning():
    watch = RunWatch()
    for minute in range(0, 60, 1):  # 0.1 GB a minute: 0.5 GB per window
        assert watch.observe(minute * 60, int(minute * 0.1 * GB), None, None) == []


def test_pressure_and_thermal_edges():
    watch = RunWatch()
    assert watch.observe(0, None, "warn", None) == []
    assert watch.observe(15, None, "critical", None) == [
        "memory pressure is critical: macOS may kill the training; quit other apps"
    ]
    assert watch.observe(30, None, "critical", None) == []
    assert watch.observe(45, None, "warn", None) == []  # not cleared until normal
    assert watch.observe(60, None, "critical", None) == []
    assert watch.observe(75, None, "normal", None) == []
    assert len(watch.observe(90, None, "critical", None)) == 1
    assert watch.observe(100, None, None, True)[0].startswith("the CPU is thermally throttled")
    assert watch.observe(115, None, None, True) == []


def test_the_thread_writes_warning_events(tmp_path):
    path = tmp_path / "events.jsonl"
    figures = iter([(0, "normal", False), (0, "critical", False), (0, "critical", True)])
    clock = iter(range(0, 1000, 15))
    stop = threading.Event()

    def measure():
        try:
            return next(figures)
        except StopIteration:
            stop.set()
            return (0, "critical", True)

    thread = start(path, "run-1", "train", stop, clock=lambda: next(clock), measure=measure, every=0.01)
    thread.join(5)
    events = read_events(path)
    assert [(e["kind"], e["level"], e["source"], e["run"], e["stage"]) for e in events] == [
        ("log", "warning", "monitor", "run-1", "train")
    ] * 2
    assert "memory pressure is critical" in events[0]["message"]
    assert "thermally throttled" in events[1]["message"]


def test_a_failing_measurement_is_skipped(tmp_path):
    stop = threading.Event()
    calls = []

    def measure():
        calls.append(1)
        if len(calls) > 3:
            stop.set()
        raise OSError("sysctl gone")

    start(tmp_path / "e.jsonl", "r", "train", stop, clock=time.time, measure=measure, every=0.01).join(5)
    assert len(calls) >= 3 and read_events(tmp_path / "e.jsonl") == []


def test_measure_on_this_machine():
    import platform

    from w4tui.monitors.watch import measure

    swap, pressure, throttled = measure()
    assert isinstance(swap, int) and swap >= 0
    if platform.system() != "Darwin":
        assert (pressure, throttled) == (None, None)
