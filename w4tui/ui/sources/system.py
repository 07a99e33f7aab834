"""System load for the memory pane: RAM, swap, CPU per core, load average and free disk, with a
short history for sparklines (psutil only; one sample costs well under a millisecond), and the rows the
pane draws from a machine sample (``w4tui.monitors``: GPU, pressure, power, thermal, Ollama's models)."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from core.units import gb

SPARK = "▁▂▃▄▅▆▇█"  # as w4tui.ui.sources.fmt.SPARK
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


PRESSURE_KIND = {"normal": "value", "warn": "warn", "critical": "bad"}


def machine_rows(sample, gpu_history: list[float], now: float) -> list[tuple[str, list[tuple[str, str]], tuple | None]]:
    """The machine's rows for the pane: (label, [(text, kind)], gauge or None); kind is one of value,
    muted, warn, bad; a gauge is (fraction, history, high) for a bar and sparkline. ``sample`` is a
    ``w4tui.monitors.sampler.MachineSample`` (None before the first one)."""
    if sample is None:
        return [("GPU", [("sampling…", "muted")], None)]
    notes, rows = sample.notes, []
    for index, gpu in enumerate(sample.gpus):
        units = [(f"{gpu.utilization:.0f}% busy", "value")]
        if gpu.total:
            units.append((f"{gb(gpu.in_use)} / {gb(gpu.total)}", "value"))
        elif gpu.in_use is not None:
            units.append((f"{gb(gpu.in_use)} in use", "value"))
        if gpu.allocated:
            units.append((f"alloc {gb(gpu.allocated)}", "muted"))
        # A GPU box's every GPU by its CUDA index (a training's rank r uses GPU r); the sparkline is GPU 0's.
        label = f"GPU {index}" if len(sample.gpus) > 1 else "GPU"
        rows.append((label, units, (gpu.utilization / 100, gpu_history if index == 0 else [], 100)))
    if not sample.gpus:
        rows.append(("GPU", [(notes.get("gpu", "none found"), "muted")], None))
    if all(notes.get(k) == "not macOS" for k in ("pressure", "power", "thermal")):
        rows.append(("pressure", [("memory pressure, power, thermal state:", "muted"), ("macOS only", "muted")], None))
    else:
        rows.append(
            (
                "pressure",
                [(sample.pressure, PRESSURE_KIND[sample.pressure])]
                if sample.pressure
                else [(notes.get("pressure", "unknown"), "muted")],
                None,
            )
        )
        rows.append(("power", _power(sample.power) or [(notes.get("power", "unknown"), "muted")], None))
        rows.append(("thermal", _thermal(sample.thermal) or [(notes.get("thermal", "unknown"), "muted")], None))
    rows.extend(_ollama(sample, now))
    return rows


def _power(power) -> list[tuple[str, str]]:
    if power is None:
        return []
    if power.percent is None:
        return [(power.source, "value")]
    units = [
        ("battery" if power.on_battery else "AC", "warn" if power.on_battery else "value"),
        (f"{power.percent}%", "value"),
    ]
    if power.state and power.state != "discharging":  # on battery it goes without saying
        units.append((power.state, "muted"))
    if power.on_battery and power.remaining_s:
        units.append((f"{power.remaining_s // 3600}h{power.remaining_s % 3600 // 60:02d} left", "muted"))
    return units


def _thermal(thermal) -> list[tuple[str, str]]:
    if thermal is None:
        return []
    if thermal.throttled:
        units = [("throttled", "bad")]
        if thermal.speed_limit is not None:
            units.append((f"CPU speed {thermal.speed_limit}%", "bad"))
        return units
    return [("nominal", "value")] if thermal.reported else [("no warning recorded", "value")]


def _ollama(sample, now: float) -> list[tuple[str, list[tuple[str, str]], None]]:
    if sample.ollama is None:
        note = sample.notes.get("ollama")
        return [("Ollama", [(note, "muted")], None)] if note else []
    if not sample.ollama:
        return [("Ollama", [("no model loaded", "muted")], None)]
    rows = []
    for i, model in enumerate(sample.ollama):
        size, vram = model.get("size") or 0, model.get("size_vram")
        units = [(str(model.get("model") or model.get("name")), "value"), (gb(size), "value")]
        if vram is not None and vram != size:
            units.append((f"({gb(vram)} on the GPU)", "muted"))
        until = _timestamp(model.get("expires_at"))
        if until is not None:
            units.append((f"until {time.strftime('%H:%M', time.localtime(until))}", "muted"))
        rows.append(("Ollama" if i == 0 else "", units, None))
    return rows


def _timestamp(value) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def warning_rows(warnings: list[dict]) -> list[tuple[str, list[tuple[str, str]], None]]:
    """The live training's machine warnings (``log`` events from its supervisor's watch), each whole."""
    rows = []
    for event in warnings:
        when = time.strftime("%H:%M", time.localtime(event.get("time", 0)))
        rows.append(("warning", [(when, "warn"), *((w, "warn") for w in str(event.get("message", "")).split())], None))
    return rows


def accelerator_rows(device: str | None, mem: dict[str, int], history: list[float]) -> list:
    """The training's own accelerator memory, from its metrics events."""
    if not mem:
        note = "the training runs on the CPU" if device == "cpu" else "comes with a training's metrics"
        return [("training", [("accelerator memory:", "muted"), (note, "muted")], None)]  # what, then why it is absent
    limit = mem.get("mem_recommended_max") or mem.get("mem_total")
    used = mem.get("mem_allocated", 0)
    value = f"{gb(used)} / {gb(limit)}" if limit else gb(used)
    rows = [
        (
            "training",
            [(f"{device or 'accel'} alloc", "muted"), (value, "value")],
            (used / limit if limit else 0, history, limit or None),
        )
    ]
    for key, name in (("mem_peak", "peak"), ("mem_driver", "driver"), ("mem_reserved", "reserved")):
        if key in mem:
            rows.append(("", [(f"{device or ''} {name}".strip(), "muted"), (gb(mem[key]), "value")], None))
    return rows


def system_rows(history: SystemHistory, per_core: bool, room: int) -> list:
    """RAM, swap, CPU (and per core when ``per_core``), load and free disk from the newest sample."""
    s = history.latest
    if s is None:
        return [("system", [("sampling…", "muted")], None)]
    rows = [
        (
            "RAM",
            [(f"{gb(s.ram_used)} / {gb(s.ram_total)}", "value")],
            (s.ram_used / s.ram_total if s.ram_total else 0, list(history.ram), s.ram_total),
        ),
        (
            "swap",
            [(f"{gb(s.swap_used)} / {gb(s.swap_total)}", "value")],
            (s.swap_used / s.swap_total if s.swap_total else 0, list(history.swap), s.swap_total or None),
        ),
        (
            "CPU",
            [(f"{s.cpu_total:.0f}%", "value"), (f"of {len(s.cpu)} cores", "muted")],
            (s.cpu_total / 100, list(history.cpu), 100),
        ),
    ]
    if per_core:
        rows.append(("per core", [("".join(SPARK[min(7, int(c / 100 * 8))] for c in s.cpu[:room]), "bar")], None))
    rows.append(
        ("load", [(f"{s.load[0]:.2f} {s.load[1]:.2f} {s.load[2]:.2f}", "value"), ("(1/5/15 min)", "muted")], None)
    )
    if s.disk_free is None:
        rows.append(("disk", [("free space unknown", "muted")], None))
    else:
        rows.append(
            (
                "disk",
                [
                    (f"{gb(s.disk_free)} free", "value"),
                    (f"of {gb(s.disk_total)}", "muted"),
                    (f"on {s.disk_path}", "muted"),
                ],
                None,
            )
        )
    return rows
