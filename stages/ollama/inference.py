"""Inference figures per build — tokens/s, time to first token, load time and the memory Ollama reports
for the loaded model (/api/ps ``size`` and ``size_vram``) — beside the ranges the person expects
([verify] expect_*; the seed's 8-12 tokens/s, ~200 ms, ~6 GB). Out of range is a warning, never a
failure: a slow build still answers correctly, and the person decides."""

from __future__ import annotations

import re
import statistics

from core.ollama import client as oc

RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")


def parse_range(text: str) -> tuple[float, float]:
    """Read "8-12" as (8.0, 12.0); the config checks the shape (core.config)."""
    low, high = RANGE.match(text).groups()  # type: ignore[union-attr]
    return float(low), float(high)


def measure(config, model: str, results: list[dict]) -> dict:
    """The build's figures from verify's answers and /api/ps, with a warning per figure out of range."""
    rates = [r["tokens_per_s"] for r in results if r.get("tokens_per_s")]
    # the time to the first token without loading the model (load_s says how long that took)
    firsts = [max(0.0, r["ttft_s"] - (r.get("load_s") or 0)) for r in results if r.get("ttft_s") is not None]
    loaded = next((m for m in oc.running(config) if m["model"] == oc.full_name(model)), None)
    figures = {
        "tokens_per_s": round(statistics.median(rates), 1) if rates else None,
        "ttft_ms": round(1000 * statistics.median(firsts)) if firsts else None,
        "load_s": results[0].get("load_s") if results else None,
        "memory_bytes": loaded.get("size") if loaded else None,
        "memory_vram_bytes": loaded.get("size_vram") if loaded else None,
    }
    v = config.verify
    checks = [
        ("tokens/s", figures["tokens_per_s"], v.expect_tokens_per_s, ""),
        ("time to first token", figures["ttft_ms"], v.expect_ttft_ms, " ms"),
        ("memory", figures["memory_bytes"] and figures["memory_bytes"] / 1e9, v.expect_memory_gb, " GB"),
    ]
    warnings = []
    for name, value, expected, unit in checks:
        low, high = parse_range(expected)
        if value is not None and not low <= value <= high:
            # two significant digits below 1: a demo's 23 MB model is "0.023 GB", not "0.0 GB"
            shown = f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.2g}"
            warnings.append(f"{name} {shown}{unit} is outside the expected {expected}{unit}")
    return {**figures, "warnings": warnings}


def fields(figures: dict | None) -> dict:
    """Flat fields for verify's artifact event."""
    if figures is None:
        return {}
    out = {f"inference_{k}": v for k, v in figures.items() if k != "warnings"}
    out["inference_warnings"] = " | ".join(figures["warnings"]) or None
    return out
