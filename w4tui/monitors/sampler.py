"""Runs the tools behind the parsers, with timeouts, and hands back one ``MachineSample``: what it
could measure, and for what it could not a short note (tool missing, timed out, unexpected output).
Nothing runs at import or construction; ``sample()`` is called from a worker thread.

On macOS one round is two processes (``ioreg`` and one ``sysctl`` for pressure and swap); power and
thermal state change slowly and are asked every ``SLOW_S``. Elsewhere GPUs come from NVML.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import macos
from .macos import GpuStats, Power, Swap, Thermal, UnexpectedOutput
from .nvidia import NvidiaProbe

TIMEOUT_S = 2.0
SLOW_S = 60.0


class ToolProblem(Exception):
    """A tool is missing, failed or timed out; ``str()`` is the note to show."""


def run_tool(argv: list[str], timeout: float = TIMEOUT_S) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ToolProblem(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise ToolProblem(f"{argv[0]} gave no answer in {timeout:.0f} s") from None
    except OSError as exc:
        raise ToolProblem(f"{argv[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0 and not done.stdout.strip():
        raise ToolProblem(f"{argv[0]} failed: {(done.stderr.strip() or f'exit {done.returncode}')[:60]}")
    return done.stdout


def ollama_ps(host: str, timeout: float = TIMEOUT_S) -> list[dict[str, Any]]:
    """Ollama's loaded models from GET /api/ps (server/routes.go PsHandler: {"models": [{"name", "model",
    "size", "size_vram", "expires_at", ...}]}), with the standard library: asking every few seconds must
    not cost the TUI an HTTP client (httpx builds an SSL context per client)."""
    try:
        with urllib.request.urlopen(host.rstrip("/") + "/api/ps", timeout=timeout) as response:
            data = json.loads(response.read(1 << 20))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
            raise ToolProblem(f"Ollama is not reachable at {host}") from None
        raise ToolProblem(f"Ollama at {host}: {reason}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ToolProblem(f"Ollama at {host}: unexpected /api/ps answer")
    return [m for m in models if isinstance(m, dict)]


@dataclass(frozen=True)
class MachineSample:
    time: float
    gpus: tuple[GpuStats, ...] = ()
    pressure: str | None = None  # "normal", "warn", "critical"
    swap: Swap | None = None
    power: Power | None = None
    thermal: Thermal | None = None
    ollama: tuple[dict, ...] | None = None  # Ollama's loaded models (/api/ps); None: not asked or not reachable
    notes: dict[str, str] = field(default_factory=dict)  # what could not be measured: gpu, pressure, ...


class MachineSampler:
    """``ollama``: a callable returning /api/ps's models (raises to say why not), or None to skip."""

    def __init__(
        self,
        ollama: Callable[[], list[dict[str, Any]]] | None = None,
        system: str | None = None,
        run: Callable[[list[str]], str] = run_tool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ollama, self.run, self.clock = ollama, run, clock
        self.system = system  # platform.system() on first use, not at import or construction
        self._nvidia = None
        self._slow: tuple[float, Power | None, Thermal | None, dict[str, str]] | None = None

    def sample(self) -> MachineSample:
        if self.system is None:
            self.system = platform.system()
        notes: dict[str, str] = {}
        values: dict[str, Any] = {}
        if self.system == "Darwin":
            values.update(self._mac(notes))
        else:
            values["gpus"] = tuple(self._nvidia_gpus(notes))
            notes.setdefault("pressure", "not macOS")
            notes["power"] = notes["thermal"] = "not macOS"
        if self.ollama is not None:
            try:
                values["ollama"] = tuple(self.ollama())
            except Exception as exc:  # OllamaError: down, slow; shown as a state
                notes["ollama"] = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return MachineSample(self.clock(), notes=notes, **values)

    def _nvidia_gpus(self, notes: dict[str, str]) -> list[GpuStats]:
        if self._nvidia is None:
            self._nvidia = NvidiaProbe()
        gpus = self._nvidia.read()
        if not gpus:
            notes["gpu"] = self._nvidia.note or "no GPU found"
        return gpus

    def _mac(self, notes: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            out["gpus"] = tuple(
                macos.parse_ioreg_accelerators(self.run(["ioreg", "-r", "-d", "1", "-w", "0", "-c", "IOAccelerator"]))
            )
        except (ToolProblem, UnexpectedOutput) as exc:
            notes["gpu"] = str(exc)
        try:
            text = self.run(["sysctl", "kern.memorystatus_vm_pressure_level", "vm.swapusage"])
        except ToolProblem as exc:
            notes["pressure"] = notes["swap"] = str(exc)
        else:
            lines = {line.split(":", 1)[0].strip(): line for line in text.splitlines() if ":" in line}
            for key, name, parse in (
                ("pressure", "kern.memorystatus_vm_pressure_level", macos.parse_pressure_level),
                ("swap", "vm.swapusage", macos.parse_swapusage),
            ):
                try:
                    out[key] = parse(lines.get(name, ""))
                except UnexpectedOutput as exc:
                    notes[key] = str(exc)
        now = time.monotonic()
        if self._slow is None or now - self._slow[0] >= SLOW_S:
            slow_notes: dict[str, str] = {}
            power = thermal = None
            try:
                power = macos.parse_pmset_batt(self.run(["pmset", "-g", "batt"]))
            except (ToolProblem, UnexpectedOutput) as exc:
                slow_notes["power"] = str(exc)
            try:
                thermal = macos.parse_pmset_therm(self.run(["pmset", "-g", "therm"]))
            except (ToolProblem, UnexpectedOutput) as exc:
                slow_notes["thermal"] = str(exc)
            self._slow = (now, power, thermal, slow_notes)
        _, out["power"], out["thermal"], slow_notes = self._slow
        notes.update(slow_notes)
        return out
