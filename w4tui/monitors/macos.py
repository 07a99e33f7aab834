"""Pure parsers for the macOS tools that answer without sudo. Each takes the tool's stdout and
returns a small frozen record, or raises ``UnexpectedOutput`` naming the tool (a format this code
does not know is a state the pane shows, never a crash). The fixtures they are tested on are real
outputs published in asitop/stats/MenuMeters issues: tests/unit/fixtures/macos/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIB = 1 << 20


class UnexpectedOutput(ValueError):
    """A tool answered something these parsers do not recognise; ``str()`` says which tool."""


# -- ioreg -r -d 1 -w 0 -c IOAccelerator ---------------------------------------------------------
@dataclass(frozen=True)
class GpuStats:
    name: str  # the driver class (AGXAcceleratorG13X) or the model when ioreg gives one
    utilization: float  # "Device Utilization %"
    in_use: int | None  # bytes: "In use system memory" (what the GPU holds now)
    allocated: int | None  # bytes: "Alloc system memory" (what the driver has reserved)
    renderer: float | None = None
    tiler: float | None = None
    total: int | None = None  # bytes of GPU memory (NVIDIA); None for unified memory (the Mac's RAM)


_NODE = re.compile(r"^\+-o (\S+)", re.M)
_PERF = re.compile(r'"PerformanceStatistics"\s*=\s*\{([^}]*)\}')
_PAIR = re.compile(r'"([^"]+)"=(-?\d+)')
_MODEL = re.compile(r'"model"\s*=\s*<?"([^"]+)"')


def parse_ioreg_accelerators(text: str) -> list[GpuStats]:
    """Every accelerator node that reports "Device Utilization %" (Intel Macs may list two GPUs)."""
    starts = [m.start() for m in _NODE.finditer(text)] or [0]
    found = []
    for begin, end in zip(starts, [*starts[1:], len(text)]):
        node = text[begin:end]
        perf = _PERF.search(node)
        if perf is None:
            continue
        stats = {k: int(v) for k, v in _PAIR.findall(perf.group(1))}
        if "Device Utilization %" not in stats:
            continue
        name_match = _MODEL.search(node) or _NODE.search(node)
        found.append(
            GpuStats(
                name_match.group(1) if name_match else "GPU",
                float(stats["Device Utilization %"]),
                stats.get("In use system memory"),
                stats.get("Alloc system memory"),
                _float(stats.get("Renderer Utilization %")),
                _float(stats.get("Tiler Utilization %")),
            )
        )
    if not found:
        raise UnexpectedOutput('ioreg: no IOAccelerator with PerformanceStatistics "Device Utilization %"')
    return found


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)


# -- sysctl kern.memorystatus_vm_pressure_level / memory_pressure -------------------------------
PRESSURE_LEVELS = {1: "normal", 2: "warn", 4: "critical"}  # the kernel's NOTE_MEMORYSTATUS_PRESSURE_* values


def parse_pressure_level(text: str) -> str:
    """``kern.memorystatus_vm_pressure_level: 4`` (or ``sysctl -n``'s bare ``4``) -> "critical"."""
    match = re.fullmatch(r"\s*(?:kern\.memorystatus_vm_pressure_level\s*[:=]\s*)?(\d+)\s*", text)
    if match is None or int(match.group(1)) not in PRESSURE_LEVELS:
        raise UnexpectedOutput(f"sysctl kern.memorystatus_vm_pressure_level: unexpected {text.strip()[:40]!r}")
    return PRESSURE_LEVELS[int(match.group(1))]


def parse_memory_pressure_free(text: str) -> int:
    """``memory_pressure -Q``: the "System-wide memory free percentage: 66%" line -> 66."""
    match = re.search(r"System-wide memory free percentage:\s*(\d+)%", text)
    if match is None or int(match.group(1)) > 100:
        raise UnexpectedOutput("memory_pressure: no 'System-wide memory free percentage' line")
    return int(match.group(1))


# -- sysctl vm.swapusage ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Swap:
    total: int
    used: int
    free: int
    encrypted: bool


_SIZE_UNITS = {"B": 1, "K": 1 << 10, "M": MIB, "G": 1 << 30, "T": 1 << 40}


def _swap_size(value: str) -> int:
    # sysctl prints megabytes of 2^20 with the locale's decimal mark: "1024,00M" or "1024.00M".
    number, unit = value[:-1].replace(",", "."), value[-1].upper()
    return round(float(number) * _SIZE_UNITS[unit])


def parse_swapusage(text: str) -> Swap:
    """``vm.swapusage: total = 1024,00M  used = 379,25M  free = 644,75M  (encrypted)``."""
    sizes = dict(re.findall(r"(total|used|free)\s*=\s*([\d.,]+[BKMGT])", text, flags=re.I))
    if set(sizes) != {"total", "used", "free"}:
        raise UnexpectedOutput(f"sysctl vm.swapusage: unexpected {text.strip()[:60]!r}")
    return Swap(_swap_size(sizes["total"]), _swap_size(sizes["used"]), _swap_size(sizes["free"]), "(encrypted)" in text)


# -- pmset -g batt -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Power:
    source: str  # "AC Power", "Battery Power" or "UPS Power"
    percent: int | None = None  # None: no battery (a desktop Mac)
    state: str | None = None  # "charging", "discharging", "charged", "AC attached", "finishing charge"
    remaining_s: int | None = None

    @property
    def on_battery(self) -> bool:
        return self.source == "Battery Power"


def parse_pmset_batt(text: str) -> Power:
    """``Now drawing from 'Battery Power'`` and, on a laptop, `` -InternalBattery-0 ... 89%; discharging;
    4:47 remaining present: true``."""
    source = re.search(r"Now drawing from '([^']+)'", text)
    if source is None:
        raise UnexpectedOutput('pmset -g batt: no "Now drawing from" line')
    battery = re.search(r"InternalBattery\S*(?:\s+\(id=\d+\))?\s+(\d+)%;\s*([^;]+);\s*([^\n]*?)\s*present:", text)
    if battery is None:
        return Power(source.group(1))
    remaining = re.match(r"(\d+):(\d\d) remaining", battery.group(3))
    seconds = int(remaining.group(1)) * 3600 + int(remaining.group(2)) * 60 if remaining else None
    return Power(source.group(1), int(battery.group(1)), battery.group(2).strip(), seconds)


# -- pmset -g therm ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thermal:
    speed_limit: int | None = None  # CPU_Speed_Limit, percent of full speed (Intel Macs)
    scheduler_limit: int | None = None  # CPU_Scheduler_Limit
    thermal_level: int | None = None  # the recorded thermal warning level, when there is one
    performance_level: int | None = None

    @property
    def throttled(self) -> bool:
        return (
            (self.speed_limit is not None and self.speed_limit < 100)
            or bool(self.thermal_level)
            or (self.scheduler_limit is not None and self.scheduler_limit < 100)
        )

    @property
    def reported(self) -> bool:
        """False on Apple Silicon, where pmset records nothing ("No thermal warning level ...")."""
        return any(
            v is not None for v in (self.speed_limit, self.scheduler_limit, self.thermal_level, self.performance_level)
        )


def parse_pmset_therm(text: str) -> Thermal:
    def number(pattern: str) -> int | None:
        match = re.search(pattern, text, flags=re.I)
        return int(match.group(1)) if match else None

    result = Thermal(
        number(r"CPU_Speed_Limit\s*=\s*(\d+)"),
        number(r"CPU_Scheduler_Limit\s*=\s*(\d+)"),
        number(r"thermal warning level\s*(?:set to|=|:|is)?\s*(\d+)"),
        number(r"performance warning level\s*(?:set to|=|:|is)?\s*(\d+)"),
    )
    if not result.reported and "has been recorded" not in text:
        raise UnexpectedOutput(f"pmset -g therm: unexpected {text.strip()[:60]!r}")
    return result
