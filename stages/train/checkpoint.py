"""torch checkpoints: everything an exact resume needs, in the layout of state.py.

``<output>/checkpoints/step-<N>/`` holds the LoRA weights, optimizer, scheduler, grad-scaler and RNG
states, and ``state.json`` (step, epoch, position in the epoch's batch order, counters). The
directory gets its name only when complete, so a kill -9 mid-write leaves the previous one intact.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from core.errors import StageError
from stages.train import state as layout
from stages.train.state import KEEP, TrainState, checkpoint_dir, latest, read_state

__all__ = ["KEEP", "TrainState", "checkpoint_dir", "latest", "load", "read_state", "save"]


def save(output: Path, state: TrainState, model, optimizer, scheduler, scaler) -> Path:
    def fill(tmp: Path) -> None:
        weights = {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, str(tmp / "adapter_model.safetensors"))
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": _rng_state(),
            },
            tmp / "training_state.pt",
        )

    return layout.write(output, state, fill)


def load(path: Path, model, optimizer, scheduler, scaler) -> TrainState:
    # weights_only: a checkpoint holds tensors and plain values only, so loading one never runs code
    # (a crafted pickle would, with weights_only=False). Read before anything is changed.
    try:
        blob = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:160]
        raise StageError(
            f"{path / 'training_state.pt'}: not a checkpoint that can be loaded safely ({first})",
            hint="a checkpoint from an older w4tui or a damaged one: start the run anew in another --output",
        ) from None
    # Loaded on the CPU; load_state_dict copies into the parameters wherever they live.
    set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and blob["scaler"]:
        scaler.load_state_dict(blob["scaler"])
    _set_rng_state(blob["rng"])
    return read_state(path)


def _rng_state() -> dict:
    """Every random state an exact resume needs, as tensors and plain values (numpy's key as a list)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),  # (version, tuple of ints, gauss or None): plain values
        "numpy": {"kind": kind, "key": key.tolist(), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "mps": torch.mps.get_rng_state() if torch.backends.mps.is_available() else None,
    }


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    n = rng["numpy"]
    np.random.set_state((n["kind"], np.array(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if rng.get("mps") is not None and torch.backends.mps.is_available():  # dropout masks on the Mac
        torch.mps.set_rng_state(rng["mps"])
