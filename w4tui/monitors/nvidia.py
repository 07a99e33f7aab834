"""NVIDIA GPUs through NVML (the optional extra ``w4tui[nvidia]``, package nvidia-ml-py, module
``pynvml``). Without the package or a driver there is nothing to show: ``NvidiaProbe.read()`` says why
in a short note instead of raising."""

from __future__ import annotations

from .macos import GpuStats


class NvidiaProbe:
    def __init__(self) -> None:
        self._nvml = None
        self.note: str | None = None  # why there are no figures (None once NVML answered)
        self._tried = False

    def _init(self) -> bool:
        if self._tried:
            return self._nvml is not None
        self._tried = True  # NVML is initialised once per probe; a missing driver is not retried every round
        try:
            import pynvml  # optional (w4tui[nvidia]), and only on a machine that has the GPU
        except ImportError:
            self.note = "no NVIDIA monitoring (pip install 'w4tui[nvidia]')"
            return False
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # pynvml.NVMLError, or OSError when libnvidia-ml is absent
            self.note = f"no NVIDIA driver ({str(exc) or type(exc).__name__})"
            return False
        self._nvml = pynvml
        return True

    def read(self) -> list[GpuStats]:
        """Utilisation and memory of each GPU; [] with ``note`` set when NVML is not available."""
        if not self._init():
            return []
        nv = self._nvml
        gpus = []
        try:
            for index in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                name = nv.nvmlDeviceGetName(handle)
                util = nv.nvmlDeviceGetUtilizationRates(handle)
                mem = nv.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(
                    GpuStats(
                        name.decode() if isinstance(name, bytes) else str(name),
                        float(util.gpu),
                        int(mem.used),
                        None,
                        total=int(mem.total),
                    )
                )
        except Exception as exc:  # a GPU that fell off the bus: a state, not a crash
            self.note = f"NVML: {str(exc) or type(exc).__name__}"
            return []
        self.note = None
        return gpus
