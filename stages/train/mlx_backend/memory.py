"""mlx's own memory figures for the metrics events: what the run holds, its peak, and on Apple Silicon
Metal's recommended working set (the ceiling past which macOS starts to swap the GPU's memory).
The keys are the torch-on-MPS ones (plus mem_peak), so the Memory pane reads both backends alike."""

from __future__ import annotations

import mlx.core as mx


def working_set() -> int | None:
    """Metal's recommended working set in bytes; None without Metal (the CPU build)."""
    if not mx.metal.is_available():
        return None
    return int(mx.device_info().get("max_recommended_working_set_size") or 0) or None


def memory_fields() -> dict[str, int]:
    fields = {"mem_allocated": int(mx.get_active_memory()), "mem_peak": int(mx.get_peak_memory())}
    if (limit := working_set()) is not None:
        fields["mem_recommended_max"] = limit
    return fields
