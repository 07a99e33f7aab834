"""Which trainer a training run gets, decided the same way by the stage and by the app's pre-flight
(which must not import torch or mlx): mlx on Apple Silicon when it is installed, torch otherwise."""

from __future__ import annotations

import importlib.util
import platform

from core.errors import StageError

BACKENDS = ("auto", "torch", "mlx")
PIP_LINE = "pip install 'w4tui[mlx]'"


def apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def mlx_installed() -> bool:
    """Both packages findable (not imported: importing mlx takes a second and maps Metal)."""
    return all(importlib.util.find_spec(name) is not None for name in ("mlx", "mlx_lm"))


def choose(requested: str, on_apple_silicon: bool, has_mlx: bool) -> str:
    """The backend a run uses; ``requested`` is --backend or [train] backend."""
    if requested == "mlx" and not has_mlx:
        raise StageError("--backend mlx: mlx and mlx-lm are not installed", hint=f"{PIP_LINE} (or --backend torch)")
    if requested == "auto":
        return "mlx" if on_apple_silicon and has_mlx else "torch"
    return requested


def detect(requested: str) -> str:
    return choose(requested, apple_silicon(), mlx_installed())


def trained_by(record: dict) -> str:
    """The trainer and base precision from a training_run.json: "mlx, 4-bit base" (older records: torch)."""
    args = record.get("args") or {}
    backend = record.get("backend") or args.get("backend") or "torch"
    precision = record.get("base_precision") or record.get("base_dtype")
    return f"{backend}, {precision} base" if precision else backend
