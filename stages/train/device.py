"""Device and precision. Kept small and pure so it is testable without the hardware.

- mps > cuda > cpu unless the config or --device says otherwise.
- Frozen base weights: bf16 where the device computes it natively or reliably (CUDA with bf16
  support; MPS on macOS 14+, where PyTorch supports bf16), else fp16 on accelerators (half the
  memory of fp32 — a 7B model must fit in 32 GB) with a gradient scaler against fp16 underflow,
  and fp32 on the CPU (CPU half precision is slow and inexact).
- LoRA weights stay fp32 (PEFT's autocast_adapter_dtype): their updates are tiny and would round away.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    device: str
    dtype: str  # dtype of the frozen base weights: "float32", "bfloat16" or "float16"
    grad_scaler: bool  # fp16 needs loss scaling


def pick_device(requested: str, mps_available: bool, cuda_available: bool) -> str:
    if requested != "auto":
        if requested == "mps" and not mps_available:
            raise ValueError("device 'mps' requested but this PyTorch has no MPS backend (needs Apple Silicon)")
        if requested == "cuda" and not cuda_available:
            raise ValueError("device 'cuda' requested but no CUDA GPU is available")
        return requested
    return "mps" if mps_available else "cuda" if cuda_available else "cpu"


def pick_precision(device: str, bf16_supported: bool) -> Precision:
    if device == "cpu":
        return Precision("cpu", "float32", False)
    if bf16_supported:
        return Precision(device, "bfloat16", False)
    return Precision(device, "float16", True)


def detect(requested: str) -> Precision:
    """The real machine's choice (imports torch)."""
    import torch  # PYTORCH_ENABLE_MPS_FALLBACK is set before torch loads: stages.train_lora.torch_environment

    mps = torch.backends.mps.is_available()
    cuda = torch.cuda.is_available()
    device = pick_device(requested, mps, cuda)
    if device == "mps":
        bf16 = torch.backends.mps.is_macos_or_newer(14, 0)
    elif device == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = False
    return pick_precision(device, bf16)


def memory_fields(device: str) -> dict[str, int]:
    """Accelerator memory for the metrics event (bytes)."""
    import torch

    if device == "mps":
        return {
            "mem_allocated": torch.mps.current_allocated_memory(),
            "mem_driver": torch.mps.driver_allocated_memory(),
            "mem_recommended_max": torch.mps.recommended_max_memory(),
        }
    if device == "cuda":
        return {
            "mem_allocated": torch.cuda.memory_allocated(),
            "mem_reserved": torch.cuda.memory_reserved(),
            "mem_total": torch.cuda.get_device_properties(0).total_memory,
        }
    return {}
