"""A scripted machine sampler for TUI tests: the Mac's figures from the published fixtures
(tests/unit/fixtures/macos), parsed by the real parsers, plus a loaded Ollama model; nothing runs.
Attach it to a system sampler as ``sampler.machine`` and the Memory & load pane uses it."""

from __future__ import annotations

from pathlib import Path

from w4tui.monitors import macos
from w4tui.monitors.sampler import MachineSample

FIXTURES = Path(__file__).resolve().parent.parent / "unit" / "fixtures" / "macos"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def mac_sample(now: float) -> MachineSample:
    """An M1 Pro under warn-level pressure on battery, with Ollama holding a 7B model."""
    return MachineSample(
        now,
        gpus=tuple(macos.parse_ioreg_accelerators(_read("ioreg_m1pro.txt"))),
        pressure="warn",
        swap=macos.parse_swapusage(_read("sysctl_swapusage.txt")),
        power=macos.parse_pmset_batt(_read("pmset_batt_discharging.txt")),
        thermal=macos.parse_pmset_therm(_read("pmset_therm_apple_silicon.txt")),
        ollama=(
            {
                "model": "qwen2.5-coder:7b-instruct-q4_K_M",
                "size": 6_031_000_000,
                "size_vram": 6_031_000_000,
                "expires_at": "2025-11-26T21:05:00+00:00",
            },
        ),
    )


class ScriptedMachine:
    def __init__(self, sample: MachineSample) -> None:
        self._sample = sample
        self.calls = 0

    def sample(self) -> MachineSample:
        self.calls += 1
        return self._sample
