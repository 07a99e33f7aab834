"""Checkpoints: everything an exact resume needs, written atomically.

``<output>/checkpoints/step-<N>/`` holds the LoRA weights, optimizer, scheduler, grad-scaler and RNG
states, and ``state.json`` (step, epoch, position in the epoch's batch order, counters). The
directory gets its name only when complete, so a kill -9 mid-write leaves the previous one intact.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from core.errors import StageError
from core.fsutil import atomic_path, remove_stale_partials

KEEP = 2  # checkpoints kept on disk; older ones are removed once a newer one is complete


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch the next micro-batch belongs to
    batch: int = 0  # index of the next micro-batch in that epoch's order
    tokens: int = 0  # tokens processed (not padding)
    samples: int = 0
    data_key: str = ""  # fingerprint of the tokenized data, so a resume on other data is refused
    settings: dict = field(default_factory=dict)  # the flags that shape the run, so a resume with others is refused
    losses: list = field(default_factory=list)  # [step, loss] history, for the record


def checkpoint_dir(output: Path, step: int) -> Path:
    return output / "checkpoints" / f"step-{step:07d}"


def save(output: Path, state: TrainState, model, optimizer, scheduler, scaler) -> Path:
    target = checkpoint_dir(output, state.step)
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
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
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1) + "\n")
    remove_stale_partials(output / "checkpoints")  # what a kill -9 mid-checkpoint left, of any step
    for old in sorted((output / "checkpoints").glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest(output: Path) -> Path | None:
    """The newest complete checkpoint (complete ones are the only ones with their final name)."""
    found = sorted(p for p in (output / "checkpoints").glob("step-*") if (p / "state.json").exists())
    return found[-1] if found else None


def read_state(path: Path) -> TrainState:
    return TrainState(**json.loads((path / "state.json").read_text()))


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
