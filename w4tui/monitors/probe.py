"""What the pre-flight checks measure on this machine, in one place so tests can script it: free disk,
the memory a training's device has, what Ollama holds, the trainings running, the power source."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from core import train_backend
from core.errors import StageError
from core.ollama.client import OllamaError, running

from .macos import UnexpectedOutput, parse_pmset_batt
from .nvidia import NvidiaProbe
from .sampler import ToolProblem, run_tool

TRAIN_MODULE = "stages.train_lora"


class Probe:
    """What the checks measure, in one place so tests can script it."""

    def __init__(self, config) -> None:
        self.config = config

    def free_disk(self, path: Path) -> int:
        for candidate in (path, *path.parents):
            if candidate.exists():
                return shutil.disk_usage(candidate).free
        return shutil.disk_usage("/").free

    def memory(self, requested: str) -> tuple[str, int | None, int | None, str]:
        """(device the training will use, bytes free for it, its total, what they are): unified RAM on a
        Mac and on the CPU, the first GPU's memory (NVML) with CUDA; None when that cannot be told."""
        import psutil  # deferred: pre-flight and the TUI's first frame do not wait for it

        if platform.system() == "Darwin" or requested == "cpu":
            vm = psutil.virtual_memory()
            return ("mps" if requested in ("auto", "mps") else requested), vm.available, vm.total, "free RAM"

        gpus = NvidiaProbe().read()
        if gpus and gpus[0].total:
            return "cuda", gpus[0].total - (gpus[0].in_use or 0), gpus[0].total, f"free on {gpus[0].name}"
        if requested == "cuda" or Path("/dev/nvidia0").exists():
            return "cuda", None, None, "GPU memory (unknown without nvidia-ml-py)"
        vm = psutil.virtual_memory()
        return "cpu", vm.available, vm.total, "free RAM"

    def gpus(self) -> list:
        """Every NVIDIA GPU (NVML: name, memory in use, total), in CUDA's order; [] when it cannot be told."""
        return NvidiaProbe().read()

    def backend(self, requested: str) -> str:
        """The trainer a training would get (core/train_backend.py); mlx asked for but missing counts
        as torch here: the stage refuses it itself, with the pip line."""
        try:
            return train_backend.detect(requested)
        except StageError:
            return "torch"

    def working_set(self, total: int | None) -> int | None:
        """Metal's recommended working set (recommendedMaxWorkingSetSize) on Apple Silicon, the most the
        GPU may hold before macOS pages it: 2/3 of RAM up to 36 GiB, 3/4 above (the training's own
        metrics events carry the exact figure). None elsewhere."""
        if total is None or not train_backend.apple_silicon():
            return None
        return int(total * (2 / 3 if total <= 36 * 2**30 else 3 / 4))

    def ollama_loaded(self, on_gpu: bool = False) -> int:
        """Bytes Ollama's loaded models hold (on the GPU: size_vram); the runner unloads them before training."""
        try:
            return sum(int(m.get("size_vram" if on_gpu else "size") or 0) for m in running(self.config))
        except OllamaError:
            return 0

    def trainings(self) -> list[tuple[int, list[str]]]:
        """(pid, argv) of every training process on this machine, whoever started it."""
        import psutil  # deferred: pre-flight and the TUI's first frame do not wait for it

        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if TRAIN_MODULE in cmd and proc.info["pid"] != os.getpid():
                found.append((proc.info["pid"], list(cmd)))
        return found

    def resident(self, pid: int) -> int:
        """Bytes a process holds in memory now (0 once it is gone)."""
        import psutil  # deferred, as in trainings()

        try:
            return psutil.Process(pid).memory_info().rss
        except psutil.Error:
            return 0

    def power(self):
        if platform.system() != "Darwin":
            return None

        try:
            return parse_pmset_batt(run_tool(["pmset", "-g", "batt"]))
        except (ToolProblem, UnexpectedOutput):
            return None
