"""The sampler: tools run with timeouts, and every failure is a note in the sample, never an
exception; nothing runs at import; NVIDIA figures through a stand-in pynvml."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from w4tui.monitors import sampler as sm
from w4tui.monitors.sampler import MachineSampler, ToolProblem

FIXTURES = Path(__file__).parent / "fixtures" / "macos"
ROOT = Path(__file__).resolve().parents[2]


def mac_tools(**override):
    outputs = {
        "ioreg": (FIXTURES / "ioreg_m1pro.txt").read_text(),
        "sysctl": (FIXTURES / "sysctl_pressure_critical.txt").read_text()
        + (FIXTURES / "sysctl_swapusage.txt").read_text(),
        "pmset -g batt": (FIXTURES / "pmset_batt_discharging.txt").read_text(),
        "pmset -g therm": (FIXTURES / "pmset_therm_apple_silicon.txt").read_text(),
    }
    outputs.update(override)
    calls = []

    def run(argv):
        calls.append(argv)
        key = " ".join(argv[:3]) if argv[0] == "pmset" else argv[0]
        value = outputs[key]
        if isinstance(value, Exception):
            raise value
        return value

    return run, calls


def test_a_mac_round_reads_every_figure():
    run, calls = mac_tools()
    s = MachineSampler(
        system="Darwin",
        run=run,
        ollama=lambda: [{"model": "qwen2.5-coder:7b", "size": 6_000_000_000}],
        clock=lambda: 100.0,
    ).sample()
    assert s.gpus[0].utilization == 2.0 and s.gpus[0].in_use == 340983808
    assert s.pressure == "critical"
    assert s.swap.used == round(379.25 * 2**20)
    assert s.power.on_battery and s.power.percent == 89
    assert not s.thermal.reported
    assert s.ollama[0]["model"] == "qwen2.5-coder:7b"
    assert s.notes == {} and s.time == 100.0
    assert ["ioreg", "-r", "-d", "1", "-w", "0", "-c", "IOAccelerator"] in calls


def test_power_and_thermal_are_asked_once_a_minute(monkeypatch):
    run, calls = mac_tools()
    sampler = MachineSampler(system="Darwin", run=run)
    clock = [1000.0]
    monkeypatch.setattr(sm.time, "monotonic", lambda: clock[0])
    sampler.sample()
    clock[0] += 4
    second = sampler.sample()
    assert second.power.percent == 89  # kept from the first round
    assert sum(argv[0] == "pmset" for argv in calls) == 2
    clock[0] += sm.SLOW_S
    sampler.sample()
    assert sum(argv[0] == "pmset" for argv in calls) == 4


def test_missing_tools_and_odd_output_are_notes():
    run, _ = mac_tools(
        ioreg=ToolProblem("ioreg not found"),
        sysctl="vm.swapusage: nonsense\n",
        **{"pmset -g therm": "Usage: pmset <options>\n"},
    )
    s = MachineSampler(system="Darwin", run=run, ollama=lambda: (_ for _ in ()).throw(OSError("refused"))).sample()
    assert s.gpus == () and s.notes["gpu"] == "ioreg not found"
    assert "memorystatus_vm_pressure_level" in s.notes["pressure"] and "vm.swapusage" in s.notes["swap"]
    assert "pmset -g therm" in s.notes["thermal"] and s.power.percent == 89
    assert s.ollama is None and s.notes["ollama"] == "refused"


def test_run_tool_missing_failing_and_slow(tmp_path):
    with pytest.raises(ToolProblem, match="no-such-tool-w4 not found"):
        sm.run_tool(["no-such-tool-w4"])
    with pytest.raises(ToolProblem, match="failed: boom"):
        sm.run_tool([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    with pytest.raises(ToolProblem, match="no answer in 0 s"):
        sm.run_tool([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)


def test_linux_without_nvml_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    s = MachineSampler(system="Linux", run=lambda argv: pytest.fail(f"ran {argv}")).sample()
    assert s.gpus == () and "w4tui[nvidia]" in s.notes["gpu"]
    assert s.notes["pressure"] == s.notes["power"] == "not macOS"


def test_nvidia_figures_through_nvml(monkeypatch):
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H200",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=37),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=20_000_000_000, total=141_000_000_000),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    (gpu,) = MachineSampler(system="Linux").sample().gpus
    assert (gpu.name, gpu.utilization, gpu.in_use, gpu.total) == ("NVIDIA H200", 37.0, 20_000_000_000, 141_000_000_000)


def test_nvml_without_a_driver(monkeypatch):
    def init():
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=init))
    s = MachineSampler(system="Linux").sample()
    assert s.gpus == () and s.notes["gpu"].startswith("no NVIDIA driver")


def test_no_subprocess_at_import_or_construction():
    code = textwrap.dedent("""
        import subprocess
        def refuse(*a, **k):
            raise SystemExit("a process was started: " + repr(a))
        subprocess.Popen = refuse
        import w4tui.monitors, w4tui.monitors.macos, w4tui.monitors.sampler, w4tui.monitors.nvidia
        import w4tui.monitors.preflight, w4tui.monitors.notify
        w4tui.monitors.sampler.MachineSampler()
        import sys
        assert "pynvml" not in sys.modules and "psutil" not in sys.modules, sorted(sys.modules)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_ollama_ps_against_the_stand_in():
    from ollama_standin import OllamaStandIn

    with OllamaStandIn() as server:
        server.add_library_model()
        assert sm.ollama_ps(server.url) == []
        server.load("qwen2.5-coder:7b-instruct-q4_K_M")
        (model,) = sm.ollama_ps(server.url)
    assert model["model"] == "qwen2.5-coder:7b-instruct-q4_K_M"
    assert model["size"] > 0 and model["size_vram"] == model["size"] and model["expires_at"]


def test_ollama_ps_down_is_a_note():
    with pytest.raises(ToolProblem, match=r"Ollama is not reachable at http://127\.0\.0\.1:9"):
        sm.ollama_ps("http://127.0.0.1:9")
    s = MachineSampler(system="Linux", ollama=lambda: sm.ollama_ps("http://127.0.0.1:9")).sample()
    assert s.ollama is None and s.notes["ollama"] == "Ollama is not reachable at http://127.0.0.1:9"
